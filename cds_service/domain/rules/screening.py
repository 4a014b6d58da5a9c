"""TB, HIV, hepatitis C and hepatitis B results before alemtuzumab (label sections 2, 4 and 5).

Each check reads final results within the policy lookback before T0; the newest result of a
test decides, on the same day the most worrying one. Missing or only older results ask for the
test; an indeterminate result is a warning; positive results are critical as listed below.
"""

from __future__ import annotations

from ..findings import Evidence, Finding, Severity, Status, Suggestion
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord
from ..results import LabResult, Meaning
from .base import Rule
from .labs import Results, lab_results, order_test

TB = "tb-screening"
HIV = "hiv-screening"
HCV = "hcv-screening"
HBV = "hbv-screening"


def _missing(topic: str, results: list[Results], lookback: int, suggestion: Suggestion) -> Finding:
    """No result within the lookback: reason `stale` (only older ones) or `missing`."""
    stale = [r.latest_stale for r in results if r.latest_stale is not None]
    evidence = tuple(stale_result(s, lookback) for s in stale)
    unreadable = tuple(u for r in results for u in r.unreadable)
    return Finding(
        topic,
        Status.UNKNOWN,
        Severity.WARNING,
        reason="stale" if stale else "missing",
        evidence=evidence,
        unreadable=unreadable,
        suggestions=(suggestion,),
    )


def result(found: LabResult) -> Evidence:
    return Evidence("result", {"result": found.describe(), "reference": found.reference})


def stale_result(found: LabResult, lookback: int) -> Evidence:
    return Evidence(
        "result-too-old",
        {"result": found.describe(), "lookback": lookback, "reference": found.reference},
    )


def _all_unreadable(results: list[Results]) -> tuple:  # type: ignore[type-arg]
    return tuple(u for r in results for u in r.unreadable)


def check_tb_screening(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """TB by IGRA or skin test: positive is critical (exclude active TB, treat latent TB first)."""
    topic, lookback = TB, policy["screening_lookback"]
    tb = lab_results(record, "tb-screening-loinc", order.t0, lookback)
    latest = tb.latest
    if latest is None:
        return _missing(topic, [tb], lookback, order_test("order-igra", "tb-screening"))
    if latest.meaning is Meaning.POSITIVE:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="positive",
            facts={"when": str(latest.when)},
            evidence=(result(latest),),
            unreadable=tuple(tb.unreadable),
        )
    if latest.meaning is Meaning.INDETERMINATE:
        return Finding(
            topic,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="indeterminate",
            facts={"when": str(latest.when)},
            evidence=(result(latest),),
            unreadable=tuple(tb.unreadable),
            suggestions=(order_test("order-igra", "tb-screening-repeat"),),
        )
    return Finding(
        topic,
        Status.MET,
        Severity.INFO,
        reason="negative",
        facts={"when": str(latest.when)},
        evidence=(result(latest),),
        unreadable=tuple(tb.unreadable),
    )


TB_SCREENING_RULE = Rule(
    topic=TB,
    title="Tuberculosis screening",
    logic="Newest final IGRA/TST within the lookback: positive -> critical; indeterminate, "
    "missing or older -> warning with an IGRA order.",
    indicator="critical / warning",
    source="label",
    citation="PI section 2 (tuberculosis screening according to local guidelines) and "
    "section 4 (active infection)",
    check=check_tb_screening,
    value_sets=("result-indeterminate", "result-negative", "result-positive", "tb-screening-loinc"),
    policy_keys=("screening_lookback",),
    override_reasons=("action-completed", "need-more-info"),
)


def check_hiv_screening(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """HIV-1/2 Ag/Ab or HIV-1 RNA: positive is critical (HIV infection is a contraindication)."""
    topic, lookback = HIV, policy["screening_lookback"]
    screen = lab_results(record, "hiv-screening-loinc", order.t0, lookback)
    rna = lab_results(record, "hiv-rna-loinc", order.t0, lookback, nucleic_acid=True)
    latest = [r for r in (screen.latest, rna.latest) if r is not None]
    unreadable = _all_unreadable([screen, rna])
    if not latest:
        return _missing(
            topic, [screen, rna], lookback, order_test("order-hiv-ag-ab", "hiv-screening")
        )
    positive = [r for r in latest if r.meaning is Meaning.POSITIVE]
    if positive:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="positive",
            facts={"when": str(positive[0].when)},
            evidence=tuple(result(r) for r in positive),
            unreadable=unreadable,
        )
    unclear = [r for r in latest if r.meaning is Meaning.INDETERMINATE]
    if unclear:
        return Finding(
            topic,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="indeterminate",
            facts={"when": str(unclear[0].when)},
            evidence=tuple(result(r) for r in latest),
            unreadable=unreadable,
            suggestions=(order_test("order-hiv-ag-ab", "hiv-screening-confirm"),),
        )
    return Finding(
        topic,
        Status.MET,
        Severity.INFO,
        reason="negative",
        evidence=tuple(result(r) for r in latest),
        unreadable=unreadable,
    )


HIV_SCREENING_RULE = Rule(
    topic=HIV,
    title="HIV infection excluded",
    logic="Newest final HIV-1/2 Ag/Ab and HIV-1 RNA within the lookback: positive -> critical "
    "(contraindication); indeterminate, missing or older -> warning with a test order.",
    indicator="critical / warning",
    source="label",
    citation="PI section 4 (Contraindications: infection with HIV)",
    check=check_hiv_screening,
    value_sets=(
        "hiv-rna-loinc",
        "hiv-screening-loinc",
        "result-indeterminate",
        "result-negative",
        "result-positive",
    ),
    policy_keys=("screening_lookback",),
    override_reasons=("action-completed", "need-more-info"),
)


def check_hcv_screening(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """HCV RNA detected is critical (active infection); antibody positive without RNA a warning."""
    topic, lookback = HCV, policy["screening_lookback"]
    antibody = lab_results(record, "hcv-antibody-loinc", order.t0, lookback)
    rna = lab_results(record, "hcv-rna-loinc", order.t0, lookback, nucleic_acid=True)
    unreadable = _all_unreadable([antibody, rna])
    rna_order = order_test("order-hcv-rna", "hcv-rna")
    r, ab = rna.latest, antibody.latest
    evidence = tuple(result(x) for x in (ab, r) if isinstance(x, LabResult))
    if r is not None and r.meaning is Meaning.POSITIVE:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="rna-detected",
            facts={"when": str(r.when)},
            evidence=evidence,
            unreadable=unreadable,
        )
    if r is not None and r.meaning is Meaning.NEGATIVE:
        return Finding(
            topic,
            Status.MET,
            Severity.INFO,
            reason="rna-not-detected",
            facts={"when": str(r.when)},
            evidence=evidence,
            unreadable=unreadable,
        )
    if r is not None:
        return Finding(
            topic,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="rna-indeterminate",
            facts={"when": str(r.when)},
            evidence=evidence,
            unreadable=unreadable,
            suggestions=(rna_order,),
        )
    if ab is None:
        return _missing(
            topic, [antibody, rna], lookback, order_test("order-hcv-antibody", "hcv-screening")
        )
    if ab.meaning is Meaning.POSITIVE:
        return Finding(
            topic,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="antibody-positive",
            facts={"when": str(ab.when)},
            evidence=evidence,
            unreadable=unreadable,
            suggestions=(rna_order,),
        )
    if ab.meaning is Meaning.INDETERMINATE:
        return Finding(
            topic,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="antibody-indeterminate",
            facts={"when": str(ab.when)},
            evidence=evidence,
            unreadable=unreadable,
            suggestions=(rna_order,),
        )
    return Finding(
        topic,
        Status.MET,
        Severity.INFO,
        reason="antibody-negative",
        facts={"when": str(ab.when)},
        evidence=evidence,
        unreadable=unreadable,
    )


HCV_SCREENING_RULE = Rule(
    topic=HCV,
    title="Hepatitis C screening",
    logic="HCV RNA detected -> critical (active infection); RNA not detected -> met; antibody "
    "positive or indeterminate without RNA -> warning with an RNA order; missing -> warning.",
    indicator="critical / warning",
    source="label",
    citation="PI section 5 (hepatitis B and C: screen patients at high risk) and section 4 "
    "(active infection)",
    check=check_hcv_screening,
    value_sets=(
        "hcv-antibody-loinc",
        "hcv-rna-loinc",
        "result-indeterminate",
        "result-negative",
        "result-positive",
    ),
    policy_keys=("screening_lookback",),
    override_reasons=("action-completed", "need-more-info"),
)


def check_hbv_screening(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """HBsAg and anti-HBc within the lookback: positive -> warning (reactivation); missing ->
    order."""
    lookback = policy["screening_lookback"]
    tests = (
        (
            "HBsAg",
            lab_results(record, "hbv-surface-antigen-loinc", order.t0, lookback),
            order_test("order-hbsag", "hbv-screening", test="HBsAg"),
        ),
        (
            "anti-HBc",
            lab_results(record, "hbv-core-antibody-loinc", order.t0, lookback),
            order_test("order-anti-hbc", "hbv-screening", test="anti-HBc (total)"),
        ),
    )
    unreadable = tuple(dict.fromkeys([u for _, r, _ in tests for u in r.unreadable]))
    evidence: list[Evidence] = []
    positive: list[str] = []
    unclear: list[str] = []
    suggestions: list[Suggestion] = []
    for name, results, suggestion in tests:
        latest = results.latest
        if latest is None:
            old = results.latest_stale
            if old is not None:
                evidence.append(stale_result(old, lookback))
            unclear.append(f"{name} missing")
            suggestions.append(suggestion)
            continue
        evidence.append(result(latest))
        if latest.meaning is Meaning.POSITIVE:
            positive.append(name)
        elif latest.meaning is Meaning.INDETERMINATE:
            unclear.append(f"{name} indeterminate")
            suggestions.append(suggestion)
    if positive:
        return Finding(
            HBV,
            Status.NOT_MET,
            Severity.WARNING,
            reason="positive-and-incomplete" if unclear else "positive",
            facts={"positive": " and ".join(positive), "unclear": ", ".join(unclear)},
            evidence=tuple(evidence),
            unreadable=unreadable,
            suggestions=tuple(suggestions),
        )
    if unclear:
        return Finding(
            HBV,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="incomplete",
            facts={"unclear": ", ".join(unclear)},
            evidence=tuple(evidence),
            unreadable=unreadable,
            suggestions=tuple(suggestions),
        )
    return Finding(
        HBV,
        Status.MET,
        Severity.INFO,
        reason="negative",
        evidence=tuple(evidence),
        unreadable=unreadable,
    )


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
    value_sets=(
        "hbv-core-antibody-loinc",
        "hbv-surface-antigen-loinc",
        "result-indeterminate",
        "result-negative",
        "result-positive",
    ),
    policy_keys=("screening_lookback",),
    override_reasons=("action-completed", "need-more-info", "risk-benefit-ratio"),
)
