"""A patient recorded as deceased: never order, never "eligible".

The label does not say it: it is record integrity. An order for a patient whose record says they
died means the wrong chart is open or the death entry is wrong; either must be settled before
anything is ordered.
"""

from __future__ import annotations

from ..fhirdata import parse_date, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from .base import Rule

DECEASED = "deceased"


def check_deceased(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical when Patient.deceasedDateTime is given (whatever its value) or deceasedBoolean
    is true; met when deceasedBoolean is false or neither is given."""
    patient = record.patient
    if patient is None:
        return Finding(DECEASED, Status.MET, Severity.INFO, reason="not-deceased")
    reference = reference_of(patient)
    when = patient.get("deceasedDateTime")
    flag = patient.get("deceasedBoolean")
    if when is not None:
        day = parse_date(when)
        evidence = (
            Evidence("deceased-on", {"reference": reference, "when": str(day)})
            if day
            else Evidence("deceased-date-unreadable", {"reference": reference})
        )
        return Finding(
            DECEASED, Status.NOT_MET, Severity.CRITICAL, reason="deceased", evidence=(evidence,)
        )
    if flag is True:
        return Finding(
            DECEASED,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="deceased",
            evidence=(Evidence("deceased-flag", {"reference": reference}),),
        )
    if flag is None or flag is False:
        return Finding(DECEASED, Status.MET, Severity.INFO, reason="not-deceased")
    # Neither true nor false: the record may say the patient died; never an all-clear.
    return Finding(
        DECEASED,
        Status.MET,
        Severity.INFO,
        reason="not-deceased",
        unreadable=(Unreadable(reference, record.problem(patient) or f"deceasedBoolean {flag!r}"),),
    )


DECEASED_RULE = Rule(
    topic=DECEASED,
    title="Patient not recorded as deceased",
    logic="Patient.deceasedDateTime given (any value) or deceasedBoolean true -> critical; "
    "deceasedBoolean false or absent -> met; any other deceasedBoolean -> unknown (unreadable).",
    indicator="critical",
    source="local",
    citation="Local record-integrity rule (the label does not address it): no medication is "
    "ordered for a patient recorded as deceased; such an order means the wrong record or a "
    "wrong death entry, to be settled before ordering",
    check=check_deceased,
    override_reasons=("recipient-disagrees-evidence",),
)
