"""REMS baseline laboratory tests and hepatitis B screening before alemtuzumab.

Baseline labs (boxed warning, PI section 5, REMS): CBC with differential, serum creatinine,
urinalysis with cell counts, urine protein/creatinine ratio, TSH, ALT, AST and total bilirubin,
each with a final result within the policy window before T0. Hepatitis B (PI section 5): HBsAg and
anti-HBc within the screening lookback; carriers risk reactivation.
"""

from __future__ import annotations

from ..findings import Finding, Severity, Status, Suggestion
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..results import Meaning
from .base import Rule
from .labs import lab_results, order_test

BASELINE = "baseline-labs"
HBV = "hbv-screening"

# (short name, value set, orderable to suggest when missing: terminology/orderables.json)
BASELINE_TESTS: tuple[tuple[str, str, str], ...] = (
    ("CBC with differential", "cbc-differential-loinc", "order-cbc-differential"),
    ("serum creatinine", "serum-creatinine-loinc", "order-serum-creatinine"),
    ("urinalysis with cell counts", "urinalysis-loinc", "order-urinalysis"),
    ("urine protein/creatinine ratio", "urine-protein-creatinine-ratio-loinc",
     "order-urine-protein-creatinine-ratio"),
    ("TSH", "tsh-loinc", "order-tsh"),
    ("ALT", "alt-loinc", "order-alt"),
    ("AST", "ast-loinc", "order-ast"),
    ("total bilirubin", "bilirubin-total-loinc", "order-bilirubin-total"),
)


def _unique(items: list[Unreadable]) -> tuple[Unreadable, ...]:
    return tuple(dict.fromkeys(items))


def check_baseline_labs(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """One warning listing every baseline test without a final result in the window, one order
    each."""
    window = policy["baseline_lab_window"]
    present: list[str] = []
    missing: list[str] = []
    stale: list[str] = []
    suggestions: list[Suggestion] = []
    unreadable: list[Unreadable] = []
    for name, vs_id, orderable in BASELINE_TESTS:
        results = lab_results(record, vs_id, order.t0, window)
        unreadable.extend(results.unreadable)
        latest = max(results.current, key=lambda r: r.when.earliest) if results.current else None
        if latest is not None:
            present.append(f"{name}: {latest.test} on {latest.when} ({latest.reference})")
            continue
        missing.append(name)
        old = results.latest_stale
        if old is not None:
            stale.append(f"{name}: older than {window} days: {old.test} on {old.when} "
                         f"({old.reference})")
        suggestions.append(order_test(orderable, f"Lemtrada REMS baseline: {name} within "
                                      f"{window} days before the first infusion"))
    evidence = tuple(present + stale)
    if not missing:
        return Finding(BASELINE, Status.MET, Severity.INFO,
                       f"All {len(BASELINE_TESTS)} baseline labs within {window} days",
                       evidence=evidence, unreadable=_unique(unreadable))
    listed = ", ".join(missing)
    headline = f"Baseline labs missing within {window} days: {listed}"
    if len(headline) > 139:
        headline = (f"{len(missing)} of {len(BASELINE_TESTS)} REMS baseline labs missing within "
                    f"{window} days")
    return Finding(
        BASELINE, Status.UNKNOWN, Severity.WARNING, headline,
        explanation=(f"The Lemtrada REMS asks for the baseline tests of the prescribing "
                     f"information within {window} days before the infusion. Missing or older: "
                     f"{listed}.",),
        evidence=evidence, unreadable=_unique(unreadable), suggestions=tuple(suggestions),
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
    value_sets=("alt-loinc", "ast-loinc", "bilirubin-total-loinc", "cbc-differential-loinc",
                "result-indeterminate", "result-negative", "result-positive",
                "serum-creatinine-loinc", "tsh-loinc", "urinalysis-loinc",
                "urine-protein-creatinine-ratio-loinc"),
    policy_keys=("baseline_lab_window",),
    override_reasons=("action-completed", "need-more-info"),
)



def check_hbv_screening(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """HBsAg and anti-HBc within the lookback: positive -> warning (reactivation); missing ->
    order."""
    lookback = policy["screening_lookback"]
    tests = (
        ("HBsAg", lab_results(record, "hbv-surface-antigen-loinc", order.t0, lookback),
         order_test("order-hbsag", "Hepatitis B screening before Lemtrada")),
        ("anti-HBc", lab_results(record, "hbv-core-antibody-loinc", order.t0, lookback),
         order_test("order-anti-hbc", "Hepatitis B screening before Lemtrada")),
    )
    unreadable = _unique([u for _, r, _ in tests for u in r.unreadable])
    evidence: list[str] = []
    positive: list[str] = []
    unclear: list[str] = []
    suggestions: list[Suggestion] = []
    for name, results, suggestion in tests:
        latest = results.latest
        if latest is None:
            old = results.latest_stale
            if old is not None:
                evidence.append(f"older than {lookback} days: {old.describe()}")
            unclear.append(f"{name} missing")
            suggestions.append(suggestion)
            continue
        evidence.append(latest.describe())
        if latest.meaning is Meaning.POSITIVE:
            positive.append(name)
        elif latest.meaning is Meaning.INDETERMINATE:
            unclear.append(f"{name} indeterminate")
            suggestions.append(suggestion)
    if positive:
        return Finding(
            HBV, Status.NOT_MET, Severity.WARNING,
            f"{' and '.join(positive)} positive: hepatitis B reactivation risk, hepatology "
            "review first",
            explanation=("Hepatitis B carriers may suffer irreversible liver damage from "
                         "reactivation under alemtuzumab. Refer to hepatology (consider HBV DNA "
                         "and antiviral prophylaxis) before starting.",)
                        + ((f"Also: {', '.join(unclear)}.",) if unclear else ()),
            evidence=tuple(evidence), unreadable=unreadable, suggestions=tuple(suggestions),
        )
    if unclear:
        return Finding(
            HBV, Status.UNKNOWN, Severity.WARNING,
            f"Hepatitis B screening incomplete ({', '.join(unclear)}): order before starting "
            "Lemtrada",
            explanation=(f"Both HBsAg and anti-HBc within {lookback} days before the planned "
                         "start are needed to exclude a carrier state at risk of reactivation.",),
            evidence=tuple(evidence), unreadable=unreadable, suggestions=tuple(suggestions),
        )
    return Finding(HBV, Status.MET, Severity.INFO, "HBsAg and anti-HBc negative",
                   evidence=tuple(evidence), unreadable=unreadable)


HBV_SCREENING_RULE = Rule(
    topic=HBV,
    title="Hepatitis B screening",
    logic="Newest final HBsAg and anti-HBc within the lookback: either positive -> warning "
    "(reactivation risk, hepatology review); missing, older or indeterminate -> warning with "
    "a test order for each.",
    indicator="warning",
    source="label",
    citation="PI section 5 (hepatitis B and C: consider screening before initiating; carriers "
    "risk irreversible liver damage from reactivation)",
    check=check_hbv_screening,
    value_sets=("hbv-core-antibody-loinc", "hbv-surface-antigen-loinc", "result-indeterminate",
                "result-negative", "result-positive"),
    policy_keys=("screening_lookback",),
    override_reasons=("action-completed", "need-more-info", "risk-benefit-ratio"),
)

