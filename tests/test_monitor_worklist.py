"""`cds-service monitor EXPORT_DIR`: the clinic's alemtuzumab monitoring worklist over a FHIR Bulk
Data export (issue 15, item 4): who is listed, in which order, the deceased apart, the JSON and CSV
shapes, skipped lines named, a clear refusal of a folder it cannot read, and what the streaming
reader keeps (only the treated patients' lines, whatever the size of the export).

The fixture export is fhir_fixtures/bulk-export/ (written by fhir_fixtures/bulk_export.py; the
patients are described in fhir_fixtures/SOURCES.md), read as of 2026-11-15.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from cds_service import worklist
from cds_service.bulk_export import Reading, alemtuzumab_patients, collect, open_export
from cds_service.cli import main
from cds_service.domain.findings import Severity
from cds_service.worklist import COLUMNS, JSON_SCHEMA, Row, build_worklist, render_text

ROOT = Path(__file__).resolve().parent.parent
EXPORT = ROOT / "fhir_fixtures" / "bulk-export"
TODAY = "2026-11-15"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bulk_export_fixture", ROOT / "fhir_fixtures" / "bulk_export.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIX = _builder()


def monitor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["monitor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], folder: Path = EXPORT) -> dict[str, Any]:
    code, out, _ = monitor(capsys, str(folder), "--today", TODAY, "--json")
    assert code == 0
    doc: dict[str, Any] = json.loads(out)
    Draft202012Validator(JSON_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        doc
    )
    return doc


# -- who is listed -----------------------------------------------------------------------------

LISTED = [
    ("on time: in monitoring", FIX.ON_TIME, "monitored"),
    ("results stopped in June: in monitoring", FIX.OVERDUE, "monitored"),
    ("platelets 62: in monitoring", FIX.ITP, "monitored"),
    (
        "two courses, the second by Medication reference: in monitoring",
        FIX.TWO_COURSES,
        "monitored",
    ),
    ("deceased while in monitoring: listed apart", FIX.DECEASED, "deceased"),
    ("last infusion in March 2021: monitoring ended, not listed", FIX.ENDED, "absent"),
    ("Campath only: not Lemtrada monitoring, not listed", FIX.CAMPATH_ONLY, "absent"),
    *[(f"never treated ({p[:8]}): not listed", p, "absent") for p in FIX.NEVER_TREATED],
]


@pytest.mark.parametrize("case,patient,where", LISTED, ids=[c[0] for c in LISTED])
def test_each_fixture_patient_is_listed_where_the_clinic_expects(
    capsys: pytest.CaptureFixture[str], case: str, patient: str, where: str
) -> None:
    doc = as_json(capsys)
    rows = {r["patientId"]: r for r in doc["patients"]}
    if where == "absent":
        assert patient not in rows
    else:
        assert rows[patient]["recordedDeceased"] is (where == "deceased")


def test_the_counts_add_up(capsys: pytest.CaptureFixture[str]) -> None:
    """Seven patients have alemtuzumab on file: four in monitoring, one deceased, and two not in
    monitoring (ended, Campath only); every line of the export was read, none skipped."""
    counts = as_json(capsys)["counts"]
    lines = sum(len(p.read_bytes().splitlines()) for p in EXPORT.glob("*.ndjson"))
    assert counts == {
        "alemtuzumabPatients": 7,
        "inMonitoring": 4,
        "recordedDeceased": 1,
        "notInMonitoring": 2,
        "linesRead": lines,
        "linesSkipped": 0,
    }


ROWS = [
    ("one course in June 2025", FIX.ON_TIME, "2025-06-06", 17, "2029-06-06"),
    ("one course in January 2025", FIX.OVERDUE, "2025-01-10", 22, "2029-01-10"),
    ("one course in September 2025", FIX.ITP, "2025-09-05", 14, "2029-09-05"),
    ("two courses: counted from the second", FIX.TWO_COURSES, "2025-03-12", 20, "2029-03-12"),
    ("deceased: the history as for the living", FIX.DECEASED, "2025-02-07", 21, "2029-02-07"),
]


@pytest.mark.parametrize("case,patient,last,months,ends", ROWS, ids=[r[0] for r in ROWS])
def test_a_row_gives_the_last_infusion_the_month_and_the_end_of_monitoring(
    capsys: pytest.CaptureFixture[str], case: str, patient: str, last: str, months: int, ends: str
) -> None:
    row = next(r for r in as_json(capsys)["patients"] if r["patientId"] == patient)
    assert (row["lastInfusion"], row["monthsIntoMonitoring"], row["monitoringEndsOn"]) == (
        last,
        months,
        ends,
    )


def test_the_deceased_row_names_the_day_of_death_and_runs_no_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = as_json(capsys)
    row = doc["patients"][-1]
    assert row["patientId"] == FIX.DECEASED and row["deceasedOn"] == FIX.DECEASED_ON
    assert (row["urgency"], row["overdue"], row["abnormal"], row["nextDue"]) == (None, [], [], None)


# -- the order ---------------------------------------------------------------------------------


def test_critical_first_then_the_longest_overdue_then_the_deceased(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ITP (critical) heads the list; the patient whose results stopped in June comes before
    those on time; the deceased come last."""
    ids = [r["patientId"] for r in as_json(capsys)["patients"]]
    assert ids[0] == FIX.ITP
    assert ids[1] == FIX.OVERDUE
    assert set(ids[2:4]) == {FIX.ON_TIME, FIX.TWO_COURSES}
    assert ids[4] == FIX.DECEASED


def test_the_overdue_patient_is_told_which_tests_are_overdue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = {r["patientId"]: r for r in as_json(capsys)["patients"]}
    overdue = rows[FIX.OVERDUE]
    assert overdue["urgency"] == "warning"
    assert any("CBC" in test for test in overdue["overdue"])
    assert overdue["nextDue"] is not None and overdue["nextDue"] < TODAY
    itp = rows[FIX.ITP]
    assert itp["urgency"] == "critical"
    assert any("62" in text for text in itp["abnormal"])
    assert rows[FIX.ON_TIME]["overdue"] == []


def row(name: str, urgency: Severity, next_due: date | None, overdue: int = 0) -> Row:
    return Row(
        name,
        date(2025, 1, 1),
        22,
        date(2029, 1, 1),
        urgency=urgency,
        overdue=tuple(f"test {n}" for n in range(overdue)),
        next_due=next_due,
    )


ORDER = [
    (
        "critical before warning, however overdue the warning",
        [
            row("w", Severity.WARNING, date(2026, 1, 1)),
            row("c", Severity.CRITICAL, date(2027, 1, 1)),
        ],
        ["c", "w"],
    ),
    (
        "within a severity, the earliest due date first",
        [
            row("later", Severity.WARNING, date(2026, 9, 1)),
            row("sooner", Severity.WARNING, date(2026, 6, 1)),
        ],
        ["sooner", "later"],
    ),
    (
        "same due date: more tests overdue first",
        [
            row("one", Severity.WARNING, date(2026, 6, 1), 1),
            row("three", Severity.WARNING, date(2026, 6, 1), 3),
        ],
        ["three", "one"],
    ),
    (
        "no due date after any due date",
        [row("none", Severity.INFO, None), row("dated", Severity.INFO, date(2027, 1, 1))],
        ["dated", "none"],
    ),
    (
        "everything equal: by patient id",
        [row("b", Severity.INFO, None), row("a", Severity.INFO, None)],
        ["a", "b"],
    ),
]


@pytest.mark.parametrize("case,rows,expected", ORDER, ids=[o[0] for o in ORDER])
def test_rows_sort_by_urgency_then_how_long_overdue(
    case: str, rows: list[Row], expected: list[str]
) -> None:
    assert [r.patient_id for r in sorted(rows, key=Row.sort_key)] == expected


# -- the three outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 80, 132], ids=lambda w: f"{w} columns")
def test_text_fits_the_terminal_and_lists_the_deceased_apart(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, _ = monitor(capsys, str(EXPORT), "--today", TODAY)
    assert code == 0
    lines = out.splitlines()
    assert max(map(len, lines)) <= width
    deceased_at = next(i for i, line in enumerate(lines) if line.startswith("Recorded as deceased"))
    listed = "\n".join(lines[:deceased_at])
    for patient in (FIX.ON_TIME, FIX.OVERDUE, FIX.ITP, FIX.TWO_COURSES):
        assert patient[:20] in listed
    assert FIX.DECEASED[:20] not in listed
    assert FIX.DECEASED[:20] in "\n".join(lines[deceased_at:])
    assert "Not in monitoring: 2 other patients" in " ".join(lines)


def test_csv_has_the_documented_columns_and_one_line_per_patient(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = monitor(capsys, str(EXPORT), "--today", TODAY, "--csv")
    assert code == 0
    table = list(csv.reader(io.StringIO(out)))
    assert tuple(table[0]) == COLUMNS
    rows = [dict(zip(COLUMNS, line, strict=True)) for line in table[1:]]
    assert [r["patientId"] for r in rows] == [r["patientId"] for r in as_json(capsys)["patients"]]
    assert [r["recordedDeceased"] for r in rows] == ["false"] * 4 + ["true"]
    assert rows[-1]["deceasedOn"] == FIX.DECEASED_ON and rows[-1]["urgency"] == ""


def test_json_and_csv_cannot_both_be_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["monitor", str(EXPORT), "--json", "--csv"])
    assert exit_.value.code == 2


def test_render_text_on_an_empty_worklist_says_so(tmp_path: Path) -> None:
    (tmp_path / "Patient.000.ndjson").write_text("")
    text = render_text(build_worklist(open_export(tmp_path), date(2026, 11, 15)), 80)
    assert "No patient in monitoring." in text


# -- bad input ---------------------------------------------------------------------------------

BAD_LINES = [
    ("not JSON", "Condition.000.ndjson", b'{"resourceType": "Condition", "id": ', "not valid JSON"),
    ("not an object", "Condition.000.ndjson", b"[1, 2]", "not a JSON object"),
    (
        "another type than the file's",
        "Condition.000.ndjson",
        b'{"resourceType": "Observation", "id": "x", "subject": {"reference": "Patient/p"}}',
        "resourceType 'Observation' in a Condition file",
    ),
    (
        "a result about nobody",
        "Observation.001.ndjson",
        b'{"resourceType": "Observation", "id": "orphan", "status": "final"}',
        "Observation without a patient",
    ),
    (
        "a Patient without id",
        "Patient.000.ndjson",
        b'{"resourceType": "Patient", "gender": "female"}',
        "Patient without an id",
    ),
    (
        "a medication order about nobody",
        "MedicationAdministration.000.ndjson",
        b'{"resourceType": "MedicationAdministration", "id": "m", "status": "completed"}',
        "MedicationAdministration without a patient",
    ),
]


@pytest.mark.parametrize(
    "case,file,line,problem", BAD_LINES, ids=[f"a line that is {c[0]}" for c in BAD_LINES]
)
def test_a_bad_line_is_named_by_file_and_line_and_the_run_goes_on(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: str,
    file: str,
    line: bytes,
    problem: str,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    folder = tmp_path / "export"
    shutil.copytree(EXPORT, folder)
    target = folder / file
    number = len(target.read_bytes().splitlines()) + 1
    target.write_bytes(target.read_bytes() + line + b"\n")
    doc = as_json(capsys, folder)
    assert doc["counts"]["linesSkipped"] == 1
    [bad] = doc["skippedLines"]
    assert (bad["file"], bad["line"]) == (file, number)
    assert bad["problem"].startswith(problem)
    assert [r["patientId"] for r in doc["patients"]] == [
        r["patientId"] for r in as_json(capsys)["patients"]
    ]
    code, out, err = monitor(capsys, str(folder), "--today", TODAY)
    assert code == 0 and "Traceback" not in out + err
    assert f"{file} line {number}: {problem}" in out


def test_files_it_does_not_read_are_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    shutil.copytree(EXPORT, folder)
    (folder / "Encounter.000.ndjson").write_text('{"resourceType": "Encounter"}\n')
    (folder / "output.ndjson").write_text("{}\n")
    (folder / "manifest.json").write_text("{}")
    doc = as_json(capsys, folder)
    assert doc["filesNotRead"] == [
        {"file": "Encounter.000.ndjson", "why": "Encounter: no check reads it"},
        {"file": "output.ndjson", "why": "the resource type cannot be read from the name"},
    ]


def test_a_record_the_checks_fail_on_is_listed_for_review_and_the_run_goes_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = worklist.evaluate_monitoring

    def failing(record: Any, context: Any, policy: Any) -> Any:
        if record.patient_id == FIX.OVERDUE:
            raise KeyError("a shape no check expected")
        return real(record, context, policy)

    monkeypatch.setattr(worklist, "evaluate_monitoring", failing)
    doc = as_json(capsys)
    assert doc["notEvaluated"] == [FIX.OVERDUE]
    assert FIX.OVERDUE not in [r["patientId"] for r in doc["patients"]]
    assert doc["patients"][0]["patientId"] == FIX.ITP
    code, out, err = monitor(capsys, str(EXPORT), "--today", TODAY)
    assert code == 0 and "Traceback" not in out + err
    assert out.split("\n\n")[1].startswith("NOT EVALUATED (1)")
    code, out, err = monitor(capsys, str(EXPORT), "--today", TODAY, "--csv")
    assert code == 0 and f"NOT EVALUATED (review by hand): patient {FIX.OVERDUE}" in err


def unreadable_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    return folder


REFUSALS = [
    ("a folder that does not exist", lambda tmp: tmp / "nowhere", "no such folder"),
    (
        "a file instead of a folder",
        lambda tmp: (tmp / "Patient.000.ndjson", (tmp / "Patient.000.ndjson").write_text(""))[0],
        "not a folder",
    ),
    ("a folder with no NDJSON file", lambda tmp: tmp, "no NDJSON file"),
    ("a folder it may not read", unreadable_folder, "cannot read"),
]


@pytest.mark.parametrize("case,make,says", REFUSALS, ids=[f"{c[0]}: exit 2" for c in REFUSALS])
def test_an_export_folder_it_cannot_read_is_refused_with_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, make: Any, says: str
) -> None:
    folder = make(tmp_path)
    if case.endswith("may not read") and os.access(folder, os.R_OK):
        pytest.skip("running as a user who can read any folder (root)")
    try:
        code, out, err = monitor(capsys, str(folder), "--today", TODAY)
    finally:
        if folder.exists():
            folder.chmod(0o700)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and says in err and "Traceback" not in err


def test_a_today_that_is_not_a_date_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = monitor(capsys, str(EXPORT), "--today", "15/11/2026")
    assert code == 2 and "not a date" in err


# -- streaming: what the reader keeps ----------------------------------------------------------


def test_the_reader_keeps_only_the_treated_patients_lines(tmp_path: Path) -> None:
    """An export of one treated patient among 300 untreated ones, each with results and an
    unrelated medication: pass 1 finds the one, pass 2 keeps exactly that patient's lines and the
    one Medication their record points to, nothing of the others."""
    folder = tmp_path / "export"
    treated = "treated-1"
    resources: list[tuple[str, dict[str, Any]]] = []
    for n in range(300):
        patient = f"untreated-{n}"
        resources.append(("Patient", {"resourceType": "Patient", "id": patient}))
        resources += [
            ("Observation", r)
            for r in FIX.background_labs(patient, patient, [date(2026, 1, 5), date(2026, 6, 1)])
        ]
        resources.append(
            (
                "MedicationRequest",
                FIX.requested(
                    f"{patient}-rx", patient, "acyclovir-400mg", date(2026, 1, 5), 30, "active"
                ),
            )
        )
    mine = [
        {"resourceType": "Patient", "id": treated},
        *FIX.administrations(treated, "course", date(2026, 2, 2), 5),
        *FIX.monthly_labs(treated, "labs", date(2026, 1, 20), date(2026, 11, 2)),
        FIX.requested("rx-mine", treated, "acyclovir-400mg", date(2026, 2, 2), 60, "completed"),
    ]
    resources += [(r["resourceType"], r) for r in mine]
    resources += [
        ("Medication", FIX.medication("acyclovir-400mg", FIX.ACYCLOVIR)),
        ("Medication", FIX.medication("unused", FIX.CAMPATH)),
    ]
    FIX.write_export(folder, resources, split=500)
    export = open_export(folder)
    assert alemtuzumab_patients(export) == {treated}
    reading = Reading()
    kept = collect(export, {treated}, reading)
    assert reading.lines == len(resources) and reading.bad == 0
    assert set(kept.by_patient) == {treated}
    assert len(kept.by_patient[treated]) == len(mine)
    assert set(kept.medications) == {"Medication/acyclovir-400mg"}
    by_type = {r["resourceType"] for r in kept.resources_of(treated)}
    assert by_type == {
        "Patient",
        "MedicationAdministration",
        "MedicationRequest",
        "Observation",
        "Medication",
    }


def test_the_fixture_export_is_what_its_builder_writes(tmp_path: Path) -> None:
    if not FIX.SYNTHEA_BULK.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    resources = [
        *FIX.synthea_lines(FIX.PATIENTS),
        *((r["resourceType"], r) for r in FIX.written()),
    ]
    FIX.write_export(tmp_path, resources, split=400)
    built = {p.name: p.read_bytes() for p in tmp_path.glob("*.ndjson")}
    committed = {p.name: p.read_bytes() for p in EXPORT.glob("*.ndjson")}
    assert built == committed


# -- the installed command ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_installed_command_prints_the_worklist() -> None:
    """`.venv/bin/cds-service monitor` (the console script pip installed), as a clinic runs it."""
    command = Path(sys.executable).parent / "cds-service"
    result = subprocess.run(
        [str(command), "monitor", str(EXPORT), "--today", TODAY, "--csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(table[0]) == COLUMNS and len(table) == 6
    missing = subprocess.run(
        [str(command), "monitor", str(EXPORT / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_the_readme_example_is_what_the_command_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- readme-monitor-output -->\n```\n", 1)[1].split("```", 1)[0]
    command, printed = shown.split("\n", 1)
    assert command == f"$ COLUMNS=80 cds-service monitor fhir_fixtures/bulk-export --today {TODAY}"
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(ROOT)
    code, out, _ = monitor(capsys, "fhir_fixtures/bulk-export", "--today", TODAY)
    assert code == 0 and out == printed


def test_a_patient_whose_infusion_dates_cannot_be_read_is_listed_for_review(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The on-time patient's Lemtrada administrations with unreadable dates: the clinic is told
    to review the record, never that the patient is not in monitoring; the control (the
    fixture as built) lists the same patient on track."""
    folder = tmp_path / "export"
    shutil.copytree(EXPORT, folder)
    target = folder / "MedicationAdministration.000.ndjson"
    lines = []
    for line in target.read_text().splitlines():
        resource = json.loads(line)
        if resource["subject"]["reference"] == f"Patient/{FIX.ON_TIME}":
            resource["effectiveDateTime"] = "early June"
        lines.append(json.dumps(resource))
    target.write_text("\n".join(lines) + "\n")
    before = as_json(capsys)
    assert FIX.ON_TIME in [r["patientId"] for r in before["patients"]]
    assert before["notEvaluated"] == []
    doc = as_json(capsys, folder)
    assert doc["notEvaluated"] == [FIX.ON_TIME]
    assert FIX.ON_TIME not in [r["patientId"] for r in doc["patients"]]
    assert doc["counts"]["notInMonitoring"] == before["counts"]["notInMonitoring"]
    code, out, err = monitor(capsys, str(folder), "--today", TODAY)
    assert code == 0 and "infusion dates unreadable" in out and "Traceback" not in out + err
