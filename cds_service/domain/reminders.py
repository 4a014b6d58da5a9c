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
        "**Confirm outside the record** (not checkable from FHIR)",
        "- REMS: the prescriber is certified, the healthcare facility is certified and the patient "
        "is enrolled and authorized (REMS R-1 to R-4).",
        "- Infusion setting: a certified healthcare setting with equipment and personnel to manage "
        "anaphylaxis and serious infusion reactions; infuse over 4 hours; observe the patient for "
        "at least 2 hours after each infusion (boxed warning, section 2).",
        "",
        f"**Monitoring plan until {months} months after the last infusion** (boxed warning, "
        "section 5; REMS periodic monitoring)",
        "- Monthly: CBC with differential, serum creatinine, urinalysis with urine cell counts.",
        "- Every 3 months: thyroid function (TSH).",
        "- Periodically: serum transaminases (ALT, AST) and total bilirubin.",
        "- Yearly: skin examination.",
    )
