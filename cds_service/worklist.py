"""The clinic's worklist: every patient in alemtuzumab monitoring in a FHIR Bulk Data export.

`cds-service monitor EXPORT_DIR` reads the export in two streaming passes (bulk_export.py),
builds each treated patient's record as the hook services do (PatientRecord.build), runs the
monitoring checks of the `lemtrada-monitoring` service (domain/monitoring.py,
domain/rules/monitoring.py) and prints one row per patient, most urgent first. Patients recorded
as deceased are listed apart, with no checks run.

Output: text wrapped to a given width (`render_text`), JSON (`as_json`, schema in the README and
JSON_SCHEMA below) or CSV (`as_csv`, COLUMNS).
"""

from __future__ import annotations

import csv
import io
import logging
import textwrap
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from .bulk_export import (
    BAD_LINES_KEPT,
    BadLine,
    Export,
    Kept,
    Reading,
    alemtuzumab_patients,
    collect,
)
from .domain.fhirdata import parse_date
from .domain.findings import Severity
from .domain.monitoring import (
    MonitoringContext,
    deceased,
    monitoring_context,
    summarise,
    unreadable_infusions,
)
from .domain.policy import Policy, load_policy
from .domain.record import PatientRecord
from .domain.rules.monitoring import evaluate_monitoring

log = logging.getLogger(__name__)

COLUMNS = (
    "patientId",
    "recordedDeceased",
    "deceasedOn",
    "urgency",
    "lastInfusion",
    "monthsIntoMonitoring",
    "monitoringEndsOn",
    "nextDue",
    "overdue",
    "abnormal",
)
"""CSV columns (and the keys of each JSON row). `overdue` and `abnormal` join their entries with
'; ' in CSV and are lists in JSON; dates are ISO; empty (null in JSON) when not applicable."""


_DAY = {"type": ["string", "null"], "format": "date"}
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cds-service monitor --json",
    "type": "object",
    "required": [
        "today",
        "export",
        "patients",
        "notEvaluated",
        "counts",
        "skippedLines",
        "filesNotRead",
    ],
    "additionalProperties": False,
    "properties": {
        "today": {"type": "string", "format": "date"},
        "export": {"type": "string", "description": "the export folder as given"},
        "patients": {
            "description": "patients in monitoring, most urgent first, then those recorded as "
            "deceased (deceased: true; no checks run: urgency null, overdue and abnormal empty)",
            "type": "array",
            "items": {
                "type": "object",
                "required": list(COLUMNS),
                "additionalProperties": False,
                "properties": {
                    "patientId": {"type": "string"},
                    "recordedDeceased": {"type": "boolean"},
                    "deceasedOn": _DAY,
                    "urgency": {"enum": ["critical", "warning", "info", None]},
                    "lastInfusion": {"type": "string", "format": "date"},
                    "monthsIntoMonitoring": {"type": "integer", "minimum": 0},
                    "monitoringEndsOn": {"type": "string", "format": "date"},
                    "nextDue": _DAY,
                    "overdue": {"type": "array", "items": {"type": "string"}},
                    "abnormal": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "notEvaluated": {
            "description": "treated patients whose record made the checks fail: to review by hand",
            "type": "array",
            "items": {"type": "string"},
        },
        "counts": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "alemtuzumabPatients",
                "inMonitoring",
                "recordedDeceased",
                "notInMonitoring",
                "linesRead",
                "linesSkipped",
            ],
            "properties": {
                "alemtuzumabPatients": {"type": "integer", "minimum": 0},
                "inMonitoring": {"type": "integer", "minimum": 0},
                "recordedDeceased": {"type": "integer", "minimum": 0},
                "notInMonitoring": {"type": "integer", "minimum": 0},
                "linesRead": {"type": "integer", "minimum": 0},
                "linesSkipped": {"type": "integer", "minimum": 0},
            },
        },
        "skippedLines": {
            "description": f"the first {BAD_LINES_KEPT} skipped lines (counts.linesSkipped has "
            "them all); line 0 is a file that could not be opened",
            "type": "array",
            "items": {
                "type": "object",
                "required": ["file", "line", "problem"],
                "additionalProperties": False,
                "properties": {
                    "file": {"type": "string"},
                    "line": {"type": "integer", "minimum": 0},
                    "problem": {"type": "string"},
                },
            },
        },
        "filesNotRead": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["file", "why"],
                "additionalProperties": False,
                "properties": {"file": {"type": "string"}, "why": {"type": "string"}},
            },
        },
    },
}
"""What `--json` prints (tests validate every output against it)."""


@dataclass(frozen=True)
class Row:
    """One patient of the worklist."""

    patient_id: str
    last_infusion: date
    months: int
    """Whole calendar months from the last infusion to today (month 0 is the first month)."""
    ends_on: date
    urgency: Severity | None = None
    overdue: tuple[str, ...] = ()
    abnormal: tuple[str, ...] = ()
    next_due: date | None = None
    deceased: bool = False
    deceased_on: date | None = None

    def sort_key(self) -> tuple[int, date, int, str]:
        """Critical first, then the longest overdue (earliest due date), then the most tests
        overdue, then the patient id: the same export always gives the same order."""
        urgency = -(self.urgency if self.urgency is not None else Severity.WARNING)
        return (urgency, self.next_due or date.max, -len(self.overdue), self.patient_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "patientId": self.patient_id,
            "recordedDeceased": self.deceased,
            "deceasedOn": _iso(self.deceased_on),
            "urgency": self.urgency.indicator if self.urgency is not None else None,
            "lastInfusion": self.last_infusion.isoformat(),
            "monthsIntoMonitoring": self.months,
            "monitoringEndsOn": self.ends_on.isoformat(),
            "nextDue": _iso(self.next_due),
            "overdue": list(self.overdue),
            "abnormal": list(self.abnormal),
        }


@dataclass
class Worklist:
    """The rows (monitored, then deceased), and what the reading saw."""

    today: date
    folder: Path
    monitoring_months: int
    rows: list[Row] = field(default_factory=list)
    deceased: list[Row] = field(default_factory=list)
    alemtuzumab_patients: int = 0
    not_monitored: int = 0
    not_evaluated: list[str] = field(default_factory=list)
    """Treated patients whose record made the evaluation fail: to review by hand."""
    lines_read: int = 0
    lines_skipped: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    files_not_read: list[tuple[str, str]] = field(default_factory=list)


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def build_worklist(export: Export, today: date, policy: Policy | None = None) -> Worklist:
    """Both passes over the export, then each treated patient evaluated in turn (one patient's
    resources parsed at a time)."""
    policy = policy or load_policy()
    treated = alemtuzumab_patients(export)
    reading = Reading()
    kept = collect(export, treated, reading)
    worklist = Worklist(
        today,
        export.folder,
        policy["monitoring_months"],
        alemtuzumab_patients=len(treated),
        lines_read=reading.lines,
        lines_skipped=reading.bad,
        bad_lines=reading.bad_lines,
        files_not_read=export.not_read,
    )
    for patient_id in sorted(treated):
        try:
            row = evaluate_patient(patient_id, kept, today, policy)
        except UnreadableHistory:
            log.warning("patient %s: Lemtrada on file, infusion dates unreadable", patient_id)
            worklist.not_evaluated.append(patient_id)
            continue
        except Exception as exc:  # one patient's unreadable record must not end the clinic's list
            log.warning("patient %s could not be evaluated (%s)", patient_id, type(exc).__name__)
            worklist.not_evaluated.append(patient_id)
            continue
        if row is None:
            worklist.not_monitored += 1
        elif row.deceased:
            worklist.deceased.append(row)
        else:
            worklist.rows.append(row)
    worklist.rows.sort(key=Row.sort_key)
    return worklist


class UnreadableHistory(Exception):
    """A patient with Lemtrada on file whose infusion dates cannot be read."""


def evaluate_patient(patient_id: str, kept: Kept, today: date, policy: Policy) -> Row | None:
    """The patient's row, or None when not in monitoring (no Lemtrada infusion on file, Campath
    only, or monitoring ended)."""
    resources = kept.resources_of(patient_id)
    kept.by_patient.pop(patient_id, None)  # evaluated: its lines are no longer needed
    record = PatientRecord.build(patient_id, resources)
    if deceased(record):
        # The monitoring service answers nothing for a deceased patient; the clinic still wants
        # to know who left its list, so their infusion history is read as for the living.
        alive = PatientRecord.build(patient_id, [_without_death(r) for r in resources])
        context = monitoring_context(alive, today, policy)
        if context is None:
            return None
        return _row(patient_id, context, deceased=True, deceased_on=_deceased_on(record))
    context = monitoring_context(record, today, policy)
    if context is None:
        if unreadable_infusions(record, today):
            # Lemtrada on file but its dates unreadable: as the monitoring service says, the
            # clinic cannot be told "not in monitoring"; the patient is listed for review.
            raise UnreadableHistory(patient_id)
        return None
    summary = summarise(evaluate_monitoring(record, context, policy), context, policy)
    return _row(
        patient_id,
        context,
        urgency=summary.urgency,
        overdue=summary.overdue,
        abnormal=summary.abnormal,
        next_due=summary.next_due,
    )


def _row(patient_id: str, context: MonitoringContext, **fields: Any) -> Row:
    return Row(
        patient_id, context.last_infusion, context.months_since_last, context.ends_on, **fields
    )


def _deceased_on(record: PatientRecord) -> date | None:
    """The day of death when the record gives a readable one."""
    span = parse_date((record.patient or {}).get("deceasedDateTime"))
    return span.earliest if span is not None else None


def _without_death(resource: dict[str, Any]) -> dict[str, Any]:
    if resource.get("resourceType") != "Patient":
        return resource
    return {k: v for k, v in resource.items() if k not in ("deceasedBoolean", "deceasedDateTime")}


# -- output ------------------------------------------------------------------------------------

MIN_WIDTH = 40
LABEL = 10
"""Width of the urgency column (`CRITICAL  `)."""


def render_text(worklist: Worklist, width: int) -> str:
    """The worklist for a terminal: a header, one block per patient (urgency, id, dates, then the
    overdue tests and abnormal results), the deceased apart, then what was skipped. Every line
    at most `width` (at least MIN_WIDTH) characters."""
    width = max(width, MIN_WIDTH)
    counts = {s: sum(1 for r in worklist.rows if r.urgency is s) for s in reversed(Severity)}
    lines = _wrap(f"Alemtuzumab monitoring worklist, {worklist.today}: {worklist.folder}", width)
    of = worklist.monitoring_months
    lines += _wrap(
        f"{len(worklist.rows)} patient{_s(len(worklist.rows))} in monitoring ("
        + ", ".join(f"{n} {_label(s).lower()}" for s, n in counts.items())
        + f"); {worklist.lines_read} lines read",
        width,
    )
    lines.append("")
    if worklist.not_evaluated:
        lines += _wrap(
            f"NOT EVALUATED ({len(worklist.not_evaluated)}): records the checks could not "
            "read (infusion dates unreadable, or a record the checks failed on); review them by "
            "hand:",
            width,
        )
        lines += [line for p in worklist.not_evaluated for line in _wrap(p, width, "  ", "    ")]
        lines.append("")
    for row in worklist.rows:
        lines += _block(_label(row.urgency), row, of, width)
    if not worklist.rows:
        lines += _wrap("No patient in monitoring.", width)
    if worklist.deceased:
        lines += [
            "",
            *_wrap(f"Recorded as deceased ({len(worklist.deceased)}): no checks run", width),
        ]
        for row in worklist.deceased:
            died = f"died {row.deceased_on}" if row.deceased_on else "deceased (no date)"
            lines += _wrap(
                f"{row.patient_id}: {died}; last infusion {row.last_infusion}",
                width,
                " " * 2,
                " " * 4,
            )
    if worklist.not_monitored:
        lines += [
            "",
            *_wrap(
                f"Not in monitoring: {worklist.not_monitored} other patient"
                f"{_s(worklist.not_monitored)} with alemtuzumab on file (Campath only, no "
                "completed Lemtrada infusion, or monitoring ended).",
                width,
            ),
        ]
    lines += _skipped(worklist, width)
    return "\n".join(lines) + "\n"


def _block(label: str, row: Row, of: int, width: int) -> list[str]:
    indent = " " * LABEL
    out = _wrap(row.patient_id, width, f"{label:<{LABEL}}", indent)
    out += _wrap(
        f"last infusion {row.last_infusion}, month {row.months} of {of}; next due "
        f"{row.next_due or '-'}",
        width,
        indent,
        indent + "  ",
    )
    if row.overdue:
        out += _wrap("overdue: " + "; ".join(row.overdue), width, indent, indent + "  ")
    if row.abnormal:
        out += _wrap("abnormal: " + "; ".join(row.abnormal), width, indent, indent + "  ")
    return out


def _skipped(worklist: Worklist, width: int) -> list[str]:
    out: list[str] = []
    if worklist.lines_skipped:
        out += [
            "",
            *_wrap(
                f"Lines skipped ({worklist.lines_skipped} of {worklist.lines_read}):",
                width,
            ),
        ]
        for bad in worklist.bad_lines:
            out += _wrap(str(bad), width, "  ", "    ")
        unnamed = worklist.lines_skipped - len(worklist.bad_lines)
        if unnamed > 0:
            out += _wrap(f"and {unnamed} more", width, "  ", "    ")
    if worklist.files_not_read:
        out += ["", *_wrap(f"Files not read ({len(worklist.files_not_read)}):", width)]
        for name, why in worklist.files_not_read:
            out += _wrap(f"{name}: {why}", width, "  ", "    ")
    return out


def _label(urgency: Severity | None) -> str:
    """CRITICAL, WARNING, or `on track` (nothing overdue, nothing abnormal)."""
    if urgency is None or urgency is Severity.INFO:
        return "on track"
    return urgency.indicator.upper()


def _s(n: int) -> str:
    return "s" * (n != 1)


def _wrap(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    """Wrapped at spaces only; a word longer than the line is cut, so no line is longer than
    `width`."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=True,
    ) or [first.rstrip()]


def as_json(worklist: Worklist) -> dict[str, Any]:
    """The machine-readable worklist (schema: README, *cds-service monitor*)."""
    return {
        "today": worklist.today.isoformat(),
        "export": str(worklist.folder),
        "patients": [r.as_json() for r in (*worklist.rows, *worklist.deceased)],
        "notEvaluated": list(worklist.not_evaluated),
        "counts": {
            "alemtuzumabPatients": worklist.alemtuzumab_patients,
            "inMonitoring": len(worklist.rows),
            "recordedDeceased": len(worklist.deceased),
            "notInMonitoring": worklist.not_monitored,
            "linesRead": worklist.lines_read,
            "linesSkipped": worklist.lines_skipped,
        },
        "skippedLines": [b.as_json() for b in worklist.bad_lines],
        "filesNotRead": [{"file": name, "why": why} for name, why in worklist.files_not_read],
    }


def as_csv(worklist: Worklist) -> str:
    """One line per patient (COLUMNS), monitored patients first in worklist order, then the
    deceased."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in (*worklist.rows, *worklist.deceased):
        data = row.as_json()
        writer.writerow(
            ["; ".join(data[c]) if isinstance(data[c], list) else _cell(data[c]) for c in COLUMNS]
        )
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
