"""After the infusion: the Lemtrada history a patient-view answer counts from.

The infusions are read exactly as the course-interval check reads prior courses
(rules/course.py: completed MedicationAdministrations, MedicationStatements and
MedicationRequests with dates, Lemtrada only, never Campath, grouped into courses by the
policy's grouping gap). Every monitoring interval is counted in calendar months from the last
infusion of the last course (PI section 5: monitoring until 48 months after the last infusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from .fhirdata import add_months
from .findings import Severity
from .policy import Policy
from .record import PatientRecord, Unreadable

if TYPE_CHECKING:
    from .evaluate import Checked


@dataclass(frozen=True)
class Infusion:
    """One Lemtrada infusion day on file and the record that says so."""

    day: date
    reference: str
    resource_type: str


@dataclass(frozen=True)
class MonitoringContext:
    """What every monitoring check counts from: today and the Lemtrada courses on file."""

    today: date
    courses: tuple[tuple[Infusion, ...], ...]
    """Lemtrada only, oldest first; each course's infusions in day order."""
    first_infusion: date
    last_infusion: date
    """The last infusion of the last course: every interval counts from it."""
    ends_on: date
    """last_infusion + the policy's monitoring months (calendar months)."""

    @property
    def months_since_last(self) -> int:
        """Whole calendar months from the last infusion to today."""
        months = (self.today.year - self.last_infusion.year) * 12 + (
            self.today.month - self.last_infusion.month
        )
        if add_months(self.last_infusion, months) > self.today:
            months -= 1
        return max(months, 0)

    def due(self, since: date, months: int) -> date:
        """The day a test is due again: `months` calendar months after `since` (never counted
        from before the last infusion: monitoring restarts with each course)."""
        return add_months(max(since, self.last_infusion), months)


def infusions(
    record: PatientRecord, today: date, policy: Policy
) -> tuple[tuple[Infusion, ...], ...]:
    """The Lemtrada courses given up to and including today, oldest first (each dose record gives
    its first and, for a span, its last day)."""
    # The rule package imports this module (its monitoring rules read the context): import the
    # shared course reading when it is first needed, once both are loaded.
    from .rules.course import group_courses, lemtrada_doses

    doses, _ = lemtrada_doses(record, today + timedelta(days=1))
    courses = group_courses(doses, policy["course_grouping_gap"])
    out: list[tuple[Infusion, ...]] = []
    for course in courses:
        days: dict[tuple[date, str], Infusion] = {}
        for dose in course.doses:
            rtype = dose.reference.split("/", 1)[0]
            for day in {dose.first, dose.last}:
                days.setdefault((day, dose.reference), Infusion(day, dose.reference, rtype))
        out.append(tuple(sorted(days.values(), key=lambda i: (i.day, i.reference))))
    return tuple(out)


def unreadable_infusions(record: PatientRecord, today: date) -> tuple[Unreadable, ...]:
    """Lemtrada records given up to today that could not be read (no readable date, invalid
    resource). When they are all there is, or monitoring looks ended, the service cannot tell
    whether the patient is in monitoring: it says so instead of answering with no cards."""
    from .rules.course import lemtrada_doses

    _, unreadable = lemtrada_doses(record, today + timedelta(days=1))
    return tuple(unreadable)


def deceased(record: PatientRecord) -> bool:
    """Patient.deceasedDateTime given (any value) or deceasedBoolean true, as the order
    services' deceased check reads it."""
    patient = record.patient or {}
    return patient.get("deceasedDateTime") is not None or patient.get("deceasedBoolean") is True


def monitoring_context(
    record: PatientRecord, today: date, policy: Policy
) -> MonitoringContext | None:
    """The context of a patient in monitoring, or None (answer {"cards": []}): no Lemtrada
    infusion on file (Campath is not Lemtrada), monitoring ended (more than the policy's months
    after the last infusion), or the patient recorded as deceased."""
    if deceased(record):
        return None
    courses = infusions(record, today, policy)
    if not courses:
        return None
    first = courses[0][0].day
    last = max(i.day for i in courses[-1])
    ends_on = add_months(last, policy["monitoring_months"])
    if today > ends_on:
        return None
    return MonitoringContext(today, courses, first, last, ends_on)


def monitoring_dates(
    record: PatientRecord, context: MonitoringContext, policy: Policy
) -> dict[str, str]:
    """The dates of the summary card's checklist ("dates"), ISO: last infusion, monitoring ends
    on, next TSH due (from the newest TSH since the last infusion), earliest date for a further
    course (the policy's course interval after the last infusion)."""
    from .rules.monitoring import next_due  # the rules read this module's context

    return {
        "lastInfusion": context.last_infusion.isoformat(),
        "monitoringEndsOn": context.ends_on.isoformat(),
        "nextTshDue": next_due(record, context, policy, "tsh").isoformat(),
        "earliestNextCourse": add_months(
            context.last_infusion, policy["course_interval"]
        ).isoformat(),
    }


@dataclass(frozen=True)
class MonitoringSummary:
    """One worklist row's findings: the most urgent indicator, what is overdue and what is
    abnormal (clinician words), and the next date something is due."""

    urgency: Severity
    overdue: tuple[str, ...]
    abnormal: tuple[str, ...]
    next_due: date | None


def summarise(
    checked: list[Checked], context: MonitoringContext, policy: Policy
) -> MonitoringSummary:
    """The worklist row of one patient from evaluate_monitoring's pairs: urgency is the highest
    severity of a finding shown on a card (met, pending and items to confirm are not urgent);
    overdue names each overdue test ("CBC with differential"); abnormal names value and date of
    each abnormal result or complication; next_due is the earliest date a test falls due."""
    from .rules.monitoring import summary_parts

    return summary_parts(checked, context, policy)
