"""The four core checks the product owner named first (issue #2)."""

from __future__ import annotations

from .base import Rule
from .dmt import check_prior_dmt
from .screening import check_hcv_screening, check_hiv_screening, check_tb_screening
from .vaccines import check_live_vaccine_gap
from .vzv import check_vzv_immunity

CORE_RULES: tuple[Rule, ...] = (
    Rule(
        topic="live-vaccine-gap",
        title="Live vaccine at least 6 weeks before the start",
        logic="Completed Immunization with a live CVX given less than the gap before T0 -> "
        "critical; a CVX of uncertain liveness or an undated live vaccine -> warning.",
        indicator="critical / warning",
        source="label",
        citation="PI section 2 (complete immunizations at least 6 weeks before treatment) and "
        "section 5 (live vaccines)",
        check=check_live_vaccine_gap,
        policy_keys=("vaccine_min_gap",),
        override_reasons=("patient-ineligible", "recipient-disagrees-evidence"),
    ),
    Rule(
        topic="vzv-immunity",
        title="Varicella-zoster immunity",
        logic="Immune if VZV IgG positive, varicella/zoster history (any clinical status) or "
        "varicella vaccination (CVX 21, 94); IgG negative without vaccination -> warning "
        "(vaccinate, wait the gap); no evidence -> warning with a VZV IgG order.",
        indicator="warning",
        source="label",
        citation="PI section 2 (Testing and Procedures Prior to Treatment: VZV antibodies, "
        "vaccination of antibody-negative patients)",
        check=check_vzv_immunity,
        policy_keys=("vaccine_min_gap",),
        override_reasons=("action-completed", "risk-benefit-ratio"),
    ),
    Rule(
        topic="prior-dmt",
        title="Inadequate response to two or more MS therapies",
        logic="Distinct prior MS DMT ingredients (RxNorm code or name in text; alemtuzumab and "
        "corticosteroids excluded) in MedicationStatement/Request/Administration; fewer than "
        "the minimum -> warning listing what was found.",
        indicator="warning",
        source="label",
        citation="PI section 1 (Indications and Usage: generally reserved for inadequate response "
        "to two or more MS drugs)",
        check=check_prior_dmt,
        policy_keys=("min_prior_dmts",),
        override_reasons=("recipient-disagrees-evidence", "risk-benefit-ratio",
                          "expert-contradicts"),
    ),
    Rule(
        topic="tb-screening",
        title="Tuberculosis screening",
        logic="Newest final IGRA/TST within the lookback: positive -> critical; indeterminate, "
        "missing or older -> warning with an IGRA order.",
        indicator="critical / warning",
        source="label",
        citation="PI section 2 (tuberculosis screening according to local guidelines) and "
        "section 4 (active infection)",
        check=check_tb_screening,
        policy_keys=("screening_lookback",),
        override_reasons=("action-completed", "need-more-info"),
    ),
    Rule(
        topic="hiv-screening",
        title="HIV infection excluded",
        logic="Newest final HIV-1/2 Ag/Ab and HIV-1 RNA within the lookback: positive -> critical "
        "(contraindication); indeterminate, missing or older -> warning with a test order.",
        indicator="critical / warning",
        source="label",
        citation="PI section 4 (Contraindications: infection with HIV)",
        check=check_hiv_screening,
        policy_keys=("screening_lookback",),
        override_reasons=("action-completed", "need-more-info"),
    ),
    Rule(
        topic="hcv-screening",
        title="Hepatitis C screening",
        logic="HCV RNA detected -> critical (active infection); RNA not detected -> met; antibody "
        "positive or indeterminate without RNA -> warning with an RNA order; missing -> warning.",
        indicator="critical / warning",
        source="label",
        citation="PI section 5 (hepatitis B and C: screen patients at high risk) and section 4 "
        "(active infection)",
        check=check_hcv_screening,
        policy_keys=("screening_lookback",),
        override_reasons=("action-completed", "need-more-info"),
    ),
)
