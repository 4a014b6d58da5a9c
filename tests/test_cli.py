"""The `cds-service check` command a pharmacist runs on a saved request (issue #2, item 7;
issue #10, item 5: header, problems first, wrapped to the terminal, reminders, stdin, pipes)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import date
from functools import cache
from pathlib import Path

import pytest

from cds_service.check_report import render_check
from cds_service.domain.findings import Finding, Severity, Status
from cds_service.domain.policy import load_policy
from cds_service.domain.reminders import summary_reminders
from cds_service.domain.rules import RULES
from cds_service.engine import Answer, answer
from cds_service.hook_request import HookRequest, read_hook_request
from cds_service.services import SERVICES

REQUESTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CASES = [
    ("eligible patient", "eligible_patient_at_order_select", 0, "no critical findings"),
    (
        "live vaccine three weeks before",
        "live_vaccine_three_weeks_before_start",
        2,
        "CRITICAL findings",
    ),
    (
        "missing TB result is a warning, not critical",
        "tb_screening_missing",
        0,
        "warnings to review",
    ),
    ("another drug", "order_for_another_drug", 0, "No alemtuzumab"),
]


@pytest.mark.parametrize("case,scenario,exit_code,says", CASES, ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_check_prints_the_checklist_and_exits_2_on_critical(
    case: str, scenario: str, exit_code: int, says: str
) -> None:
    """The table names each check and its status; exit status 2 means a critical finding."""
    result = run("check", str(REQUESTS / f"{scenario}.json"))
    assert result.returncode == exit_code, result.stderr
    assert says in result.stdout
    if scenario != "order_for_another_drug":
        for topic in (rule.topic for rule in RULES if "order-select" in rule.hooks):
            assert topic in result.stdout


@pytest.mark.slow
def test_check_json_lists_every_check_with_status() -> None:
    """--json gives machines the summary card's checklist extension (every check's status,
    indicator and evidence), plus the cards."""
    result = run("check", "--json", str(REQUESTS / "hiv_test_positive.json"))
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    checks = doc["checklist"]["checks"]
    statuses = {c["topic"]: (c["status"], c.get("indicator")) for c in checks}
    assert statuses["hiv-screening"] == ("not-met", "critical")
    assert statuses["tb-screening"] == ("met", None)
    summary = next(c for c in doc["cards"] if c["source"]["topic"]["code"] == "eligibility-summary")
    assert summary["extension"]["org.example.cds-service.checklist"] == doc["checklist"]
    hiv = next(c for c in checks if c["topic"] == "hiv-screening")
    assert any(e.get("reference", "").startswith("Observation/") for e in hiv["evidence"])


@pytest.mark.slow
def test_check_reports_unreadable_files_clearly(tmp_path: Path) -> None:
    """A file that is not JSON gives a one-line error and exit 1, not a traceback."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run("check", str(bad))
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_names_a_missing_file_of_the_installation_not_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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
    assert error == (
        f"error: internal failure: the service cannot read its own file {missing}: "
        "No such file or directory\n"
    )
    assert request not in error


@pytest.mark.slow
def test_check_names_an_unreadable_request_file(tmp_path: Path) -> None:
    """A request file that cannot be read is named, with the reason."""
    absent = tmp_path / "absent.json"
    result = run("check", str(absent))
    assert result.returncode == 1
    assert result.stderr == f"error: cannot read {absent}: No such file or directory\n"


# -- the report a pharmacist reads (issue #10, item 5) -------------------------------------------

CONSOLE_SCRIPT = Path(sys.executable).parent / "cds-service"
"""The installed `cds-service` command, next to this interpreter (the real entry point)."""
NEEDS_A_FHIR_SERVER = {"prefetch_keys_omitted"}
"""Fixtures that cannot be answered without the EHR's FHIR server (exit 1 in `check`)."""
FIXTURES = sorted(p.stem for p in REQUESTS.glob("*.json") if p.stem not in NEEDS_A_FHIR_SERVER)
PROBLEM_LABELS = ("CRITICAL", "WARNING", "UNKNOWN")


@cache
def evaluated(name: str) -> tuple[HookRequest, Answer]:
    """The request and the engine's answer for a fixture, as `check` computes them."""
    doc = json.loads((REQUESTS / f"{name}.json").read_text(encoding="utf-8"))
    service = next(s for s in SERVICES if s.hook == doc["hook"])
    request = read_hook_request(doc, service.hook)
    return request, answer(request, service, date(2026, 12, 1))


def check_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**env, **extra}


def check(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `cds-service check`, output to a pipe, COLUMNS only when given."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "check", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=check_env(**env),
    )


@pytest.mark.parametrize("width", [80, 100], ids=["80 columns", "100 columns"])
@pytest.mark.parametrize("name", FIXTURES)
def test_no_line_is_longer_than_the_terminal(name: str, width: int) -> None:
    """Every fixture's report fits the width, wrapped at spaces: no line is longer."""
    request, result = evaluated(name)
    lines = render_check(request, result, width).splitlines()
    too_long = [line for line in lines if len(line) > width]
    assert not too_long


@pytest.mark.parametrize("columns", ["80", "100"], ids=["COLUMNS=80", "COLUMNS=100"])
@pytest.mark.slow
def test_the_command_wraps_to_the_columns_it_is_given(columns: str) -> None:
    """The real command reads the terminal width (COLUMNS here): the evidence line that was 162
    characters wide is wrapped, and the longest line uses most of the width."""
    result = check(str(REQUESTS / "live_vaccine_three_weeks_before_start.json"), COLUMNS=columns)
    assert result.returncode == 2, result.stderr
    longest = max(len(line) for line in result.stdout.splitlines())
    assert int(columns) - 15 <= longest <= int(columns)


@pytest.mark.slow
def test_output_to_a_pipe_is_80_columns_wide() -> None:
    """Not a terminal and no COLUMNS: 80 columns."""
    result = check(str(REQUESTS / "second_course_ten_months_after_the_first.json"))
    longest = max(len(line) for line in result.stdout.splitlines())
    assert 70 <= longest <= 80


def finding(topic: str, status: Status, severity: Severity) -> Finding:
    return Finding(topic, status, severity, f"headline of {topic}")


def test_problems_are_listed_critical_then_warning_then_unknown_before_met_checks() -> None:
    """Whatever order the rules ran in, problems come first (critical, warning, unknown), then
    the met checks in rule order."""
    request, real = evaluated("eligible_patient_at_order_select")
    findings = [
        finding("met-first", Status.MET, Severity.INFO),
        finding("unknown-one", Status.UNKNOWN, Severity.WARNING),
        finding("warning-one", Status.NOT_MET, Severity.WARNING),
        finding("met-second", Status.MET, Severity.INFO),
        finding("critical-one", Status.NOT_MET, Severity.CRITICAL),
    ]
    result = dataclasses.replace(real, findings=findings)
    rows = [
        line.split()[:2]
        for line in render_check(request, result, 80).splitlines()
        if line.split(" ", 1)[0] in (*PROBLEM_LABELS, "met")
    ]
    assert rows == [
        ["CRITICAL", "critical-one:"],
        ["WARNING", "warning-one:"],
        ["UNKNOWN", "unknown-one:"],
        ["met", "met-first:"],
        ["met", "met-second:"],
    ]


def test_a_real_request_lists_its_problems_before_its_met_checks() -> None:
    """A request with a warning and eight unknowns: all nine come before the first met row."""
    request, result = evaluated("prefetch_values_null")
    labels = [line.split(" ", 1)[0] for line in render_check(request, result, 80).splitlines()]
    rows = [label for label in labels if label in (*PROBLEM_LABELS, "met")]
    assert rows.count("WARNING") == 1 and rows.count("UNKNOWN") == 8
    assert rows[:9] == ["WARNING"] + ["UNKNOWN"] * 8
    assert set(rows[9:]) == {"met"}


def test_the_header_names_patient_order_planned_start_and_course() -> None:
    """The first lines say whose order it is, which order, when it starts and from what, and
    which course it is."""
    request, result = evaluated("second_course_ten_months_after_the_first")
    header = render_check(request, result, 100).split("\n\n")[0]
    assert f"Patient        {request.patient_id}" in header
    assert "Order          MedicationRequest/lemtrada-later-course" in header
    assert "Planned start  2026-12-07 (from dosage timing start)" in header
    assert "Course         2 (1 prior course on file, the last dose on 2026-02-06)" in header


def test_the_reminders_are_the_summary_cards() -> None:
    """REMS, infusion setting and 48-month monitoring: the summary card's own reminder lines,
    without markdown, after the checks."""
    request, result = evaluated("eligible_patient_at_order_sign")
    text = render_check(request, result, 80)
    summary = next(
        c for c in result.body["cards"] if c["source"]["topic"]["code"] == "eligibility-summary"
    )
    reminders = [line for line in summary_reminders(load_policy()) if line.strip()]
    assert all(line in summary["detail"] for line in reminders)
    after_checks = " ".join(text.split("Reminders (from the eligibility summary card)")[1].split())
    for line in reminders:
        assert " ".join(line.replace("**", "").split()) in after_checks
    for words in ("REMS", "Infusion setting", "48 months after the last infusion"):
        assert words in after_checks


@pytest.mark.slow
def test_check_dash_reads_the_request_from_standard_input() -> None:
    """`check -` prints exactly what `check FILE` prints, and exits the same."""
    path = REQUESTS / "live_vaccine_three_weeks_before_start.json"
    from_stdin = check("-", stdin=path.read_text())
    from_file = check(str(path))
    assert from_stdin.returncode == from_file.returncode == 2
    assert from_stdin.stdout == from_file.stdout
    assert "live-vaccine-gap" in from_stdin.stdout


@pytest.mark.slow
def test_a_pipe_closed_early_ends_quietly() -> None:
    """Like `cds-service check FILE | head -1` once head has gone: no traceback, nothing on
    stderr, exit status 141 (128 + SIGPIPE, as a shell reports for any command cut short)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes anything
    try:
        result = subprocess.run(
            [str(CONSOLE_SCRIPT), "check", str(REQUESTS / "vzv_status_unknown.json")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            env=check_env(),
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141


@pytest.mark.slow
def test_piping_into_head_shows_the_first_line_without_a_traceback() -> None:
    """The shell pipeline a pharmacist types."""
    result = subprocess.run(
        f"'{CONSOLE_SCRIPT}' check '{REQUESTS / 'vzv_status_unknown.json'}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=check_env(),
    )
    assert result.stdout == "Lemtrada eligibility check, order-select hook\n"
    assert result.stderr == ""


EXIT_CASES = [
    ("no critical finding exits 0", ["vzv_status_unknown.json"], None, 0),
    ("a critical finding exits 2", ["hiv_test_positive.json"], None, 2),
    ("a critical finding read from standard input exits 2", ["-"], "hiv_test_positive.json", 2),
    ("a missing file is an input error", ["no-such-request.json"], None, 1),
    ("empty standard input is an input error", ["-"], "", 1),
    ("a request needing a FHIR server is an input error", ["prefetch_keys_omitted.json"], None, 1),
]


@pytest.mark.parametrize(
    "case,arguments,stdin,exit_code", EXIT_CASES, ids=[c[0] for c in EXIT_CASES]
)
@pytest.mark.slow
def test_exit_status(case: str, arguments: list[str], stdin: str | None, exit_code: int) -> None:
    """0 without a critical finding, 1 for input errors (one line, no traceback), 2 on a critical
    finding."""
    args = [a if a == "-" else str(REQUESTS / a) for a in arguments]
    result = check(*args, stdin=(REQUESTS / stdin).read_text() if stdin else "")
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    if exit_code == 1:
        assert result.stderr.startswith("error")
        assert result.stdout == ""


@pytest.mark.slow
def test_help_documents_the_exit_status() -> None:
    """`check --help` lists exit statuses 0, 1 and 2."""
    result = run("check", "--help")
    assert result.returncode == 0
    for line in ("0    no critical finding", "1    input error", "2    at least one critical"):
        assert line in result.stdout


MONITORING_CASES = [
    ("ITP found at monitoring", "treated_patient_with_platelets_60_gets_a_critical_itp_card", 2),
    ("monitoring on time", "treated_patient_with_monitoring_on_time_gets_one_info_summary", 0),
    ("never treated", "never_treated_patient_gets_no_cards", 0),
]


@pytest.mark.parametrize(
    ("case", "scenario", "exit_code"), MONITORING_CASES, ids=[c[0] for c in MONITORING_CASES]
)
@pytest.mark.slow
def test_check_reads_a_patient_view_request_as_monitoring(
    case: str, scenario: str, exit_code: int
) -> None:
    """A saved patient-view request is checked by the monitoring service: the infusion history
    instead of an order, every monitoring check, exit status 2 for a critical finding; a patient
    never treated is said to be not monitored."""
    from cds_service.domain.rules.monitoring import MONITORING_RULES

    result = run(
        "check", "--today", "2026-11-30", str(REQUESTS / "monitoring" / f"{scenario}.json")
    )
    assert result.returncode == exit_code, result.stderr
    assert result.stdout.startswith("Lemtrada monitoring check, patient-view hook")
    if scenario.startswith("never"):
        assert "No Lemtrada infusion on file" in result.stdout
        return
    assert "Last infusion  2026-08-31" in result.stdout
    assert "Ends on        2030-08-31" in result.stdout
    for rule in MONITORING_RULES:
        assert rule.topic in result.stdout
