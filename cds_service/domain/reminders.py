"""What the eligibility summary must remind of but no FHIR resource can show (rules H1-H3).

REMS certification and enrollment, the infusion setting and the 48-month monitoring plan are
attestations and commitments, not data: they go into the summary card as a short cited section,
never as cards of their own (alert fatigue).
"""

from __future__ import annotations

from .policy import Policy


def summary_reminders(policy: Policy) -> tuple[str, ...]:
    """Markdown lines for the eligibility-summary detail, with their sources."""
    months = policy["monitoring_months"]
    return (
        "**Confirm outside the record** (REMS R-1 to R-4; boxed warning, sections 2 and 5)",
        "- REMS: the prescriber is certified, the healthcare facility is certified and the patient "
        "is enrolled and authorized.",
        "- Infusion setting equipped for anaphylaxis and serious infusion reactions; infuse over 4 "
        "hours, observe at least 2 hours after each infusion.",
        f"- Monitoring plan until {months} months after the last infusion: CBC with differential, "
        "creatinine and urinalysis with urine cell counts monthly; TSH every 3 months; ALT, AST "
        "and total bilirubin periodically; skin examination yearly.",
    )
