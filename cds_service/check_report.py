"""What `cds-service check` prints for a pharmacist, as plain text wrapped to a given width.

Header (patient, order, planned start and where it came from, course number), then the problems
(critical, then warning, then unknown), then the met checks, then the summary card's reminders and
a one-line result. The caller picks the width (the CLI uses the terminal's), so this stays pure
and testable.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable

from .cards import worded
from .domain.findings import Finding, Severity, Status
from .domain.policy import load_policy
from .domain.rules.course import prior_courses
from .engine import Answer
from .hook_request import HookRequest

MIN_WIDTH = 40
"""Narrower terminals still get this width: below it the text would be one word per line."""
LABEL = 10
"""Width of the label column of the checks (`CRITICAL  `, `met       `)."""
HEADER = 15
"""Width of the label column of the header (`Planned start  `)."""


def critical(result: Answer) -> bool:
    """Whether any card is critical: the command then exits with status 2."""
    return any(card.get("indicator") == "critical" for card in result.body["cards"])


def render_check(request: HookRequest, result: Answer, width: int) -> str:
    """The whole report, every line at most `width` (at least MIN_WIDTH) characters."""
    width = max(width, MIN_WIDTH)
    if request.hook == "patient-view":
        return _render_monitoring(request, result, width)
    lines = [
        *_wrap(f"Lemtrada eligibility check, {request.hook} hook", width),
        *_field("Patient", request.patient_id, width),
    ]
    if result.order is None:
        lines += _field("Order", "No alemtuzumab (Lemtrada) order under review: no cards.", width)
        return "\n".join(lines) + "\n"
    order = result.order
    lines += _field(
        "Order", f"{order.order.reference} (recognised by {order.order.matched_by})", width
    )
    lines += _field("Planned start", f"{order.t0} (from {order.t0_source})", width)
    course = _course(result)
    if course:
        lines += _field("Course", course, width)
    problems, body = _findings(result, width)
    lines += body
    if result.reminders:
        lines += [
            "",
            "Reminders (from the eligibility summary card)",
            *_markdown(result.reminders, width),
        ]
    lines += ["", *_wrap(_result_line(result, problems), width)]
    return "\n".join(lines) + "\n"


def _render_monitoring(request: HookRequest, result: Answer, width: int) -> str:
    """The report of a patient-view request (the monitoring service): the infusion history
    instead of an order, then the same problems, items to confirm and met checks."""
    lines = [
        *_wrap(f"Lemtrada monitoring check, {request.hook} hook", width),
        *_field("Patient", request.patient_id, width),
    ]
    context = result.monitoring
    if context is None:
        lines += _field(
            "Monitoring",
            "No Lemtrada infusion on file, monitoring ended, or recorded as deceased: no cards.",
            width,
        )
        return "\n".join(lines) + "\n"
    courses = len(context.courses)
    lines += _field("Courses", f"{courses} (first infusion {context.first_infusion})", width)
    lines += _field("Last infusion", str(context.last_infusion), width)
    lines += _field("Ends on", str(context.ends_on), width)
    problems, body = _findings(result, width)
    lines += body
    result_line = (
        "Result: CRITICAL findings: act today"
        if critical(result)
        else "Result: no critical findings" + (" (items to act on)" if problems else "")
    )
    lines += ["", *_wrap(result_line, width)]
    return "\n".join(lines) + "\n"


def _findings(result: Answer, width: int) -> tuple[list[Finding], list[str]]:
    """(the problems, the lines listing problems, items to confirm and met checks)."""
    lines: list[str] = []
    problems = sorted((f for f in result.findings if f.shown), key=_urgency)
    to_confirm = [f for f in result.findings if f.to_confirm]
    met = [f for f in result.findings if not f.shown and not f.to_confirm]
    counts = {
        label: sum(1 for f in problems if _label(f) == label)
        for label in ("CRITICAL", "WARNING", "UNKNOWN")
    }
    tally = ", ".join(
        f"{n} {label.lower()}{'s' * (label == 'WARNING' and n != 1)}" for label, n in counts.items()
    )
    lines += [
        "",
        *_wrap(f"Problems ({len(problems)}): {tally}" if problems else "Problems: none", width),
    ]
    for finding in problems:
        lines += _row(_label(finding), finding, width)
        for evidence in worded(finding, load_policy()).evidence:
            lines += _wrap(evidence.text, width, " " * LABEL + "- ", " " * (LABEL + 2))
        for unreadable in finding.unreadable:
            lines += _wrap(
                f"unreadable: {unreadable}", width, " " * LABEL + "- ", " " * (LABEL + 2)
            )
    if to_confirm:
        lines += ["", *_wrap(f"To confirm ({len(to_confirm)})", width)]
    for finding in to_confirm:
        lines += _row("confirm", finding, width)
        for evidence in worded(finding, load_policy()).evidence:
            lines += _wrap(evidence.text, width, " " * LABEL + "- ", " " * (LABEL + 2))
    lines += ["", *_wrap(f"Met ({len(met)})", width)]
    for finding in met:
        lines += _row("met", finding, width)
    return problems, lines


def _urgency(finding: Finding) -> tuple[int, int]:
    """Most severe first; within a severity, 'not met' before 'unknown'."""
    return (-finding.severity, finding.status is Status.UNKNOWN)


def _label(finding: Finding) -> str:
    if finding.status is Status.UNKNOWN and finding.severity < Severity.CRITICAL:
        return "UNKNOWN"
    return finding.severity.indicator.upper()


def _course(result: Answer) -> str | None:
    """The course number the order would be, from the dated alemtuzumab records."""
    if result.record is None or result.order is None:
        return None
    history = prior_courses(result.record, result.order, load_policy()["course_grouping_gap"])
    if not history.courses:
        text = f"{history.number} (no prior alemtuzumab course on file)"
    else:
        prior = len(history.courses)
        text = (
            f"{history.number} ({prior} prior course{'s' * (prior != 1)} on file, the last "
            f"dose on {history.courses[-1].last})"
        )
    if history.unreadable:
        undated = len(history.unreadable)
        text += (
            f"; {undated} alemtuzumab record{'s' * (undated != 1)} without a readable date "
            "could make it a later course"
        )
    return text


def _result_line(result: Answer, problems: list[Finding]) -> str:
    if critical(result):
        return "Result: CRITICAL findings: do not start"
    return "Result: no critical findings" + (" (warnings to review)" if problems else "")


def _row(label: str, finding: Finding, width: int) -> list[str]:
    headline = worded(finding, load_policy()).headline
    return _wrap(f"{finding.topic}: {headline}", width, f"{label:<{LABEL}}", " " * LABEL)


def _field(name: str, value: str, width: int) -> list[str]:
    return _wrap(value, width, f"{name:<{HEADER}}", " " * HEADER)


def _markdown(lines: Iterable[str], width: int) -> list[str]:
    """The reminders' markdown as plain text: emphasis dropped, list items with a hanging
    indent."""
    out: list[str] = []
    for line in lines:
        text = re.sub(r"\*\*|`", "", line)
        if text.startswith("- "):
            out += _wrap(text[2:], width, "  - ", "    ")
        elif text.strip():
            out += _wrap(text, width)
        else:
            out.append("")
    return out


def _wrap(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    """Wrapped at spaces only (identifiers keep their hyphens); a word longer than the line is
    cut, so no line is ever longer than `width`."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=True,
    ) or [first.rstrip()]
