"""REMS baseline laboratory tests before alemtuzumab.

Baseline labs (boxed warning, PI section 5, REMS): CBC with differential, serum creatinine,
urinalysis with cell counts, urine protein/creatinine ratio, TSH, ALT, AST and total bilirubin,
each with a final result within the policy window before T0.
"""

from __future__ import annotations

from .. import orderables
from ..findings import Evidence, Finding, Severity, Status, Suggestion
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from .base import Rule
from .labs import lab_results, order_test

BASELINE = "baseline-labs"

# (value set, orderable to suggest when missing: its short name is in
# terminology/orderables.json)
BASELINE_TESTS: tuple[tuple[str, str], ...] = (
    ("cbc-differential-loinc", "order-cbc-differential"),
    ("serum-creatinine-loinc", "order-serum-creatinine"),
    ("urinalysis-loinc", "order-urinalysis"),
    ("urine-protein-creatinine-ratio-loinc", "order-urine-protein-creatinine-ratio"),
    ("tsh-loinc", "order-tsh"),
    ("alt-loinc", "order-alt"),
    ("ast-loinc", "order-ast"),
    ("bilirubin-total-loinc", "order-bilirubin-total"),
)


def _unique(items: list[Unreadable]) -> tuple[Unreadable, ...]:
    return tuple(dict.fromkeys(items))


def check_baseline_labs(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """One warning listing every baseline test without a final result in the window, one order
    each."""
    window = policy["baseline_lab_window"]
    present: list[Evidence] = []
    missing: list[str] = []
    stale: list[Evidence] = []
    suggestions: list[Suggestion] = []
    unreadable: list[Unreadable] = []
    for vs_id, orderable in BASELINE_TESTS:
        name = orderables.name(orderable)
        results = lab_results(record, vs_id, order.t0, window)
        unreadable.extend(results.unreadable)
        latest = max(results.current, key=lambda r: r.when.earliest) if results.current else None
        if latest is not None:
            present.append(
                Evidence(
                    "baseline-lab",
                    {
                        "name": name,
                        "test": latest.test,
                        "when": str(latest.when),
                        "reference": latest.reference,
                    },
                )
            )
            continue
        missing.append(name)
        old = results.latest_stale
        if old is not None:
            stale.append(
                Evidence(
                    "baseline-lab-too-old",
                    {
                        "name": name,
                        "test": old.test,
                        "when": str(old.when),
                        "reference": old.reference,
                    },
                )
            )
        suggestions.append(order_test(orderable, "baseline-lab", test=name))
    evidence = tuple(present + stale)
    if not missing:
        return Finding(
            BASELINE,
            Status.MET,
            Severity.INFO,
            reason="all-present",
            facts={"total": len(BASELINE_TESTS)},
            evidence=evidence,
            unreadable=_unique(unreadable),
        )
    return Finding(
        BASELINE,
        Status.UNKNOWN,
        Severity.WARNING,
        reason="missing",
        facts={"listed": ", ".join(missing), "missing": len(missing), "total": len(BASELINE_TESTS)},
        evidence=evidence,
        unreadable=_unique(unreadable),
        suggestions=tuple(suggestions),
    )


BASELINE_LABS_RULE = Rule(
    topic=BASELINE,
    title="REMS baseline laboratory tests",
    logic="Each of CBC with differential, serum creatinine, urinalysis, urine "
    "protein/creatinine ratio, TSH, ALT, AST and total bilirubin needs a final result within "
    "the window before T0; one warning lists what is missing, with one lab order per missing "
    "test.",
    indicator="warning",
    source="rems",
    citation="LEMTRADA REMS (baseline laboratory tests described in the PI before the first "
    "infusion); PI boxed warning and section 5 (CBC, creatinine, urinalysis, UPCR, thyroid "
    "function, transaminases and bilirubin before starting)",
    check=check_baseline_labs,
    value_sets=(
        "alt-loinc",
        "ast-loinc",
        "bilirubin-total-loinc",
        "cbc-differential-loinc",
        "result-indeterminate",
        "result-negative",
        "result-positive",
        "serum-creatinine-loinc",
        "tsh-loinc",
        "urinalysis-loinc",
        "urine-protein-creatinine-ratio-loinc",
    ),
    policy_keys=("baseline_lab_window",),
    override_reasons=("action-completed", "need-more-info"),
)
