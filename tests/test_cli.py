"""The `cds-service check` command a pharmacist runs on a saved request (issue #2, item 7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REQUESTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cds_service.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


CASES = [
    ("eligible patient", "eligible_patient_at_order_select", 0, "no critical findings"),
    ("live vaccine three weeks before", "live_vaccine_three_weeks_before_start", 2,
     "CRITICAL findings"),
    ("missing TB result is a warning, not critical", "tb_screening_missing", 0,
     "warnings to review"),
    ("another drug", "order_for_another_drug", 0, "No alemtuzumab"),
]


@pytest.mark.parametrize("case,scenario,exit_code,says", CASES, ids=[c[0] for c in CASES])
def test_check_prints_the_checklist_and_exits_2_on_critical(
    case: str, scenario: str, exit_code: int, says: str
) -> None:
    """The table names each check and its status; exit status 2 means a critical finding."""
    result = run("check", str(REQUESTS / f"{scenario}.json"))
    assert result.returncode == exit_code, result.stderr
    assert says in result.stdout
    if scenario != "order_for_another_drug":
        for topic in ("live-vaccine-gap", "vzv-immunity", "prior-dmt", "tb-screening",
                      "hiv-screening", "hcv-screening"):
            assert topic in result.stdout


def test_check_json_lists_every_check_with_status() -> None:
    """--json gives machines every check's status, indicator and evidence, plus the cards."""
    result = run("check", "--json", str(REQUESTS / "hiv_test_positive.json"))
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    statuses = {c["topic"]: (c["status"], c["indicator"]) for c in doc["checks"]}
    assert statuses["hiv-screening"] == ("not met", "critical")
    assert statuses["tb-screening"][0] == "met"
    hiv = next(c for c in doc["checks"] if c["topic"] == "hiv-screening")
    assert any("56888-1" in e for e in hiv["evidence"])


def test_check_reports_unreadable_files_clearly(tmp_path: Path) -> None:
    """A file that is not JSON gives a one-line error and exit 1, not a traceback."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run("check", str(bad))
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_names_a_missing_file_of_the_installation_not_the_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """When the service's own data file is missing (package data left out of a wheel), the error
    says so and names that file; the request file, which was read, is not blamed."""
    import cds_service.cards
    from cds_service.cli import main

    missing = tmp_path / "site-packages" / "CodeSystem-non-adherence-reason-codes.json"

    def no_code_system() -> dict[str, str]:
        raise FileNotFoundError(2, "No such file or directory", str(missing))

    monkeypatch.setattr(cds_service.cards, "_override_displays", no_code_system)
    request = str(REQUESTS / "live_vaccine_three_weeks_before_start.json")
    assert main(["check", request]) == 1
    error = capsys.readouterr().err
    assert error == (f"error: internal failure: the service cannot read its own file {missing}: "
                     "No such file or directory\n")
    assert request not in error


def test_check_names_an_unreadable_request_file(tmp_path: Path) -> None:
    """A request file that cannot be read is named, with the reason."""
    absent = tmp_path / "absent.json"
    result = run("check", str(absent))
    assert result.returncode == 1
    assert result.stderr == f"error: cannot read {absent}: No such file or directory\n"
