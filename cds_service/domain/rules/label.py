"""Contraindications, indication, screening and warnings from the rest of the label (issue #4)."""

from __future__ import annotations

from .base import Rule
from .baseline import check_baseline_labs, check_hbv_screening
from .contraindications import check_active_infection, check_hypersensitivity
from .indication import check_age, check_indication
from .pregnancy import check_pregnancy
from .warnings import (
    check_concurrent_immunosuppression,
    check_malignancy,
    check_non_live_vaccine_gap,
    check_prior_campath,
    check_thyroid_disorder,
)

LABEL_RULES: tuple[Rule, ...] = (
    Rule(
        topic="hypersensitivity",
        title="No hypersensitivity to alemtuzumab",
        logic="AllergyIntolerance (clinicalStatus active or not recorded; not refuted or "
        "entered-in-error) coded with a Lemtrada/Campath/alemtuzumab RxNorm code, or naming "
        "alemtuzumab, Lemtrada or Campath in its code or reaction substance -> critical.",
        indicator="critical",
        source="label",
        citation="PI section 4 (Contraindications: known hypersensitivity or anaphylactic "
        "reactions to alemtuzumab or any excipient)",
        check=check_hypersensitivity,
        override_reasons=("recipient-disagrees-evidence", "risk-benefit-ratio"),
    ),
    Rule(
        topic="active-infection",
        title="No active infection or HIV infection",
        logic="Current Condition (clinicalStatus active/recurrence/relapse, or not recorded "
        "without abatement; not refuted) of active tuberculosis, hepatitis B or C, or a listed "
        "acute infection, or an HIV Condition with any status -> critical.",
        indicator="critical",
        source="label",
        citation="PI section 4 (Contraindications: infection with HIV; active infection)",
        check=check_active_infection,
        override_reasons=("action-completed", "recipient-disagrees-evidence", "risk-benefit-ratio"),
    ),
    Rule(
        topic="pregnancy",
        title="Pregnancy excluded, contraception advised",
        logic="Not recorded as male: newest hCG positive or a current pregnancy Condition -> "
        "critical. Age at T0 in the reproductive range (or unknown) without a negative hCG within "
        "the window -> warning with an hCG order. Advice: contraception during and for 4 months "
        "after each course. Gender missing/unknown/other is treated as possibly female.",
        indicator="critical / warning",
        source="label",
        citation="PI section 8.1 (Pregnancy: may cause fetal harm) and section 8.3 (contraception "
        "during and for 4 months after each course); test window and age range are local policy",
        check=check_pregnancy,
        policy_keys=("pregnancy_test_window", "reproductive_age_min", "reproductive_age_max",
                     "contraception_after_course"),
        override_reasons=("action-completed", "patient-ineligible", "recipient-disagrees-evidence"),
    ),
    Rule(
        topic="indication",
        title="Relapsing multiple sclerosis",
        logic="No current MS Condition (ICD-10-CM G35.x, SNOMED CT MS concepts; remission "
        "counts) -> warning; only primary progressive MS or clinically isolated syndrome -> "
        "warning (not indicated).",
        indicator="warning",
        source="label",
        citation="PI section 1 (Indications and Usage: relapsing forms of MS in adults; not "
        "recommended for clinically isolated syndrome)",
        check=check_indication,
        override_reasons=("recipient-disagrees-evidence", "risk-benefit-ratio"),
    ),
    Rule(
        topic="age",
        title="Adult patient (17 or older)",
        logic="Age at T0 from Patient.birthDate below the pediatric limit -> warning; birthDate "
        "missing, unreadable or too partial to tell -> warning.",
        indicator="warning",
        source="label",
        citation="PI section 8.4 (Pediatric Use: not recommended below 17 years)",
        check=check_age,
        policy_keys=("pediatric_age",),
        override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
    ),
    Rule(
        topic="baseline-labs",
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
        policy_keys=("baseline_lab_window",),
        override_reasons=("action-completed", "need-more-info"),
    ),
    Rule(
        topic="hbv-screening",
        title="Hepatitis B screening",
        logic="Newest final HBsAg and anti-HBc within the lookback: either positive -> warning "
        "(reactivation risk, hepatology review); missing, older or indeterminate -> warning with "
        "a test order for each.",
        indicator="warning",
        source="label",
        citation="PI section 5 (hepatitis B and C: consider screening before initiating; carriers "
        "risk irreversible liver damage from reactivation)",
        check=check_hbv_screening,
        policy_keys=("screening_lookback",),
        override_reasons=("action-completed", "need-more-info", "risk-benefit-ratio"),
    ),
    Rule(
        topic="non-live-vaccine-gap",
        title="Other vaccines at least 6 weeks before the start",
        logic="Completed Immunization that is not live, not of doubtful liveness and not a "
        "non-vaccine CVX (Shingrix 187 and JYNNEOS 206 count here) given less than the gap "
        "before T0 -> warning; an undated one -> warning.",
        indicator="warning",
        source="label",
        citation="PI section 2 (Testing and Procedures Prior to Treatment: complete any necessary "
        "immunizations at least 6 weeks prior to treatment)",
        check=check_non_live_vaccine_gap,
        policy_keys=("vaccine_min_gap",),
        override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
    ),
    Rule(
        topic="prior-campath",
        title="Prior Campath use",
        logic="Any MedicationStatement/Request/Administration of Campath (RxNorm Campath codes or "
        "the name in text), not recorded as not taken -> warning.",
        indicator="warning",
        source="label",
        citation="PI section 5 (same active ingredient as CAMPATH: increased vigilance for "
        "additive and long-lasting effects on the immune system)",
        check=check_prior_campath,
        override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
    ),
    Rule(
        topic="concurrent-immunosuppression",
        title="No other MS therapy or immunosuppressant running",
        logic="Another MS DMT or an immunosuppressant (RxNorm code or name) in a "
        "MedicationStatement (active/intended/on-hold/unknown), MedicationRequest "
        "(active/on-hold/unknown) or MedicationAdministration (in-progress/on-hold) without an end "
        "date before T0 -> warning.",
        indicator="warning",
        source="label",
        citation="PI section 5 (concomitant antineoplastic or immunosuppressive therapies could "
        "increase the risk of immunosuppression)",
        check=check_concurrent_immunosuppression,
        override_reasons=("action-completed", "risk-benefit-ratio"),
    ),
    Rule(
        topic="thyroid-disorder",
        title="No current thyroid disorder",
        logic="Current Condition in the thyroid-disorder value set (hypothyroidism, "
        "hyperthyroidism/Graves, thyroiditis) -> warning.",
        indicator="warning",
        source="label",
        citation="PI section 5 (thyroid disorders: in patients with an ongoing thyroid disorder, "
        "administer only if the potential benefit justifies the potential risks)",
        check=check_thyroid_disorder,
        override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
    ),
    Rule(
        topic="malignancy",
        title="No current malignancy",
        logic="Current Condition in the malignancy value set, or with any ICD-10-CM code C00-C96 "
        "(matched by prefix, as the value set lists no C codes) -> warning.",
        indicator="warning",
        source="label",
        citation="Boxed warning and PI section 5 (malignancies: use caution in patients with "
        "pre-existing or ongoing malignancies)",
        check=check_malignancy,
        override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
    ),
)
