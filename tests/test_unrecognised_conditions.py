"""Never "none on file" for what was not understood (issue 13, item 2), and the deceased check
(item 7).

A current Condition that no check's value set recognises is not evidence of absence: the checklist
lists it (an item to confirm, no card of its own), the thyroid, malignancy and active-infection
checks say "none recognised", and a name that says malignancy or infection is a warning to review
it. A patient recorded as deceased is a critical card and never "eligible".

End-to-end rows are in fhir_fixtures/scenarios.json (asserted by tests/test_scenarios.py); here,
unit tables on small records and on the real Synthea bulk problem lists
(tests/data/synthea-bulk-10-patients, sources in fhir_fixtures/SOURCES.md).
"""

from __future__ import annotations

import json
import pathlib
from datetime import date
from typing import Any

import pytest

from cds_service.cards import build_cards, card_topic, worded, wording_table
from cds_service.domain.evaluate import evaluate
from cds_service.domain.findings import Finding, Severity, Status
from cds_service.domain.orders import AlemtuzumabOrder, OrderContext
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules import RULES, RULES_BY_TOPIC
from cds_service.domain.rules.unassessed import (
    NAMES_SHOWN,
    NONE_RECOGNISED,
    REVIEW_UNRECOGNISED,
    assessed_condition_sets,
    unassessed_conditions,
)
from cds_service.domain.terminology import all_value_sets, condition_keywords

ROOT = pathlib.Path(__file__).resolve().parents[1]
BULK = ROOT / "tests" / "data" / "synthea-bulk-10-patients"
T0 = date(2026, 12, 7)
PID = "p1"
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SEPSIS_PATIENT = "a5cb8ce9-cec6-6b23-0990-cbaf753578a4"
CANCER_PATIENT = "129c6ac7-8d06-89de-ad63-0204a93e76c3"
"""Synthea bulk patients: an active 1971 sepsis; active lung and breast cancers, deceased 1989."""
CONDITION_TOPICS = ("thyroid-disorder", "malignancy", "active-infection")
UNASSESSED = "unassessed-conditions"


def _condition(
    display: str | None,
    code: str | None = None,
    system: str = SCT,
    status: str | None = "active",
    onset: str | None = "2024-03-01",
    text: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code is not None:
        concept["coding"] = [{"system": system, "code": code, "display": display}]
    if text or display:
        concept["text"] = text or display
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c-{code or abs(hash(text or display)) % 10**8}",
        "code": concept,
        "subject": {"reference": f"Patient/{PID}"},
        **extra,
    }
    if status:
        condition["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": status,
                }
            ]
        }
    if onset:
        condition["onsetDateTime"] = onset
    return condition


def _patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": PID,
        "gender": "female",
        "birthDate": "1986-11-28",
        **extra,
    }


ORDER = OrderContext(
    hook="order-select",
    order=AlemtuzumabOrder({"id": "o1"}, "test", ()),
    t0=T0,
    t0_source="test",
    draft_orders=(),
)


def _record(
    resources: list[dict[str, Any]], patient: dict[str, Any] | None = None
) -> PatientRecord:
    return PatientRecord.build(PID, [patient or _patient(), *resources])


def _finding(topic: str, record: PatientRecord) -> Finding:
    """The check's finding worded as on a card, after the engine's guard (evaluate)."""
    policy = load_policy()
    finding = next(f for rule, f in evaluate(record, ORDER, policy) if rule.topic == topic)
    return worded(finding, policy)


def _bulk(patient_id: str) -> PatientRecord:
    """One Synthea bulk patient's Patient and every Condition, as the NDJSON holds them."""
    lines = [
        json.loads(line)
        for name in ("Patient.two-patients.ndjson", "Condition.two-patients.ndjson")
        for line in (BULK / name).read_text(encoding="utf-8").splitlines()
    ]
    mine = [
        r
        for r in lines
        if r.get("id") == patient_id
        or r.get("subject", {}).get("reference") == f"Patient/{patient_id}"
    ]
    return PatientRecord.build(
        patient_id, [{"resourceType": "Bundle", "entry": [{"resource": r} for r in mine]}]
    )


MET_NONE = (Status.MET, Severity.INFO, "none")
MET_NONE_RECOGNISED = (Status.MET, Severity.INFO, NONE_RECOGNISED)
REVIEW = (Status.UNKNOWN, Severity.WARNING, REVIEW_UNRECOGNISED)

# (topic, conditions, (status, severity, reason), words the headline must say)
SAFETY_NET = [
    pytest.param(
        "malignancy",
        [
            _condition(
                "Primary small cell malignant neoplasm of lung, TNM stage 1 (disorder)",
                "1078981000000107",
            )
        ],
        REVIEW,
        ("Primary small cell malignant neoplasm", "since 2024-03-01", "review"),
        id="SNOMED-coded primary small cell malignant neoplasm of lung unknown to the value "
        "sets -> malignancy warning to review it, with its date",
    ),
    pytest.param(
        "malignancy",
        [_condition("Screening for malignant neoplasm of breast (procedure)", "268547008")],
        MET_NONE,
        ("No current malignancy on file",),
        id="'Screening for malignant neoplasm of breast (procedure)' -> silent: a procedure is "
        "left out, nothing unassessed",
    ),
    pytest.param(
        "malignancy",
        [_condition(None, text="metastatic melanoma of the scalp", onset=None)],
        REVIEW,
        ("metastatic melanoma", "date not recorded"),
        id="an uncoded text 'metastatic melanoma' -> malignancy warning to review it, undated",
    ),
    pytest.param(
        "malignancy",
        [_condition(None, text="History of malignant neoplasm of breast")],
        MET_NONE_RECOGNISED,
        ("recognised",),
        id="'History of malignant neoplasm of breast' (text) -> no review, but 'none "
        "recognised' as it is unassessed",
    ),
    pytest.param(
        "malignancy",
        [_condition("Carcinoma in situ of breast (disorder)", "109889007")],
        MET_NONE_RECOGNISED,
        ("recognised",),
        id="carcinoma in situ -> no review (in situ is not a malignancy here), none recognised",
    ),
    pytest.param(
        "malignancy",
        [_condition("Benign neoplasm of skin (disorder)", "92384009")],
        MET_NONE_RECOGNISED,
        ("recognised",),
        id="benign neoplasm -> no review, none recognised",
    ),
    pytest.param(
        "malignancy",
        [_condition("Personal history of malignant neoplasm of breast", "Z85.3", system=ICD)],
        MET_NONE,
        ("on file",),
        id="ICD-10-CM Z85.3 personal history of breast cancer -> left out: none on file",
    ),
    pytest.param(
        "malignancy",
        [
            _condition(
                "Malignant neoplasm of breast (disorder)",
                "254837009",
                status="resolved",
                abatementDateTime="2020-01-01",
            )
        ],
        MET_NONE,
        ("on file",),
        id="a resolved breast cancer is not current -> none on file",
    ),
    pytest.param(
        "malignancy",
        [
            _condition(
                "Malignant neoplasm of breast (disorder)",
                "254837009",
                verificationStatus={
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "refuted",
                        }
                    ]
                },
            )
        ],
        MET_NONE,
        ("on file",),
        id="a refuted breast cancer never counts -> none on file",
    ),
    pytest.param(
        "active-infection",
        [
            _condition(
                "Sepsis due to Escherichia coli",
                "PL-4471",
                system="http://hospital.example.org/problem-list",
                onset="2026-11-20",
            )
        ],
        REVIEW,
        ("Sepsis due to Escherichia coli", "since 2026-11-20", "review"),
        id="sepsis under a local problem-list code no value set knows -> active-infection "
        "warning to review it",
    ),
    pytest.param(
        "active-infection",
        [_condition("Shingles", "ZOS-1", system="http://hospital.example.org/problem-list")],
        REVIEW,
        ("Shingles",),
        id="active shingles under a local code -> active-infection warning to review it",
    ),
    pytest.param(
        "active-infection",
        [_condition(None, text="Pneumonia, no evidence of sepsis")],
        REVIEW,
        ("Pneumonia",),
        id="'Pneumonia, no evidence of sepsis' -> the negation silences sepsis only: review "
        "pneumonia",
    ),
    pytest.param(
        "active-infection",
        [_condition(None, text="No evidence of infection")],
        MET_NONE_RECOGNISED,
        ("recognised",),
        id="'No evidence of infection' -> no review, none recognised",
    ),
    pytest.param(
        "active-infection",
        [_condition(None, text="Hepatitis B carrier")],
        MET_NONE_RECOGNISED,
        ("recognised",),
        id="'Hepatitis B carrier' (text) -> no review, none recognised",
    ),
    pytest.param(
        "active-infection",
        [_condition("Influenza vaccination (procedure)", "86198006")],
        MET_NONE,
        ("on file",),
        id="'Influenza vaccination (procedure)' -> left out: none on file",
    ),
    pytest.param(
        "active-infection",
        [_condition("Exposure to SARS-CoV-2 (event)", "840546002")],
        MET_NONE,
        ("on file",),
        id="'Exposure to SARS-CoV-2 (event)' -> left out: none on file",
    ),
    pytest.param(
        "active-infection",
        [_condition("Sepsis, unspecified organism", "A41.9", system=ICD, onset="2026-11-30")],
        (Status.NOT_MET, Severity.CRITICAL, "infection"),
        ("Active infection",),
        id="sepsis coded in a value set (ICD-10-CM A41.9) -> the critical card, not a review",
    ),
    pytest.param(
        "thyroid-disorder",
        [_condition("Essential hypertension (disorder)", "59621000")],
        MET_NONE_RECOGNISED,
        ("No current thyroid disorder recognised", "current conditions no check assessed: 1"),
        id="hypertension (disorder) only -> thyroid says none recognised",
    ),
    pytest.param(
        "thyroid-disorder",
        [],
        MET_NONE,
        ("No current thyroid disorder on file",),
        id="no conditions -> thyroid says none on file",
    ),
    pytest.param(
        "malignancy",
        [],
        MET_NONE,
        ("No current malignancy on file",),
        id="no conditions -> malignancy says none on file",
    ),
    pytest.param(
        "active-infection",
        [],
        MET_NONE,
        ("on file",),
        id="no conditions -> active infection says none on file",
    ),
    pytest.param(
        "thyroid-disorder",
        [
            _condition("Stress (finding)", "73595000"),
            _condition("History of coronary artery bypass grafting (situation)", "399261000"),
        ],
        MET_NONE,
        ("on file",),
        id="only a finding and a situation -> left out: none on file",
    ),
    pytest.param(
        "malignancy",
        [_condition("Thyrotoxicosis with diffuse goiter", "E05.00", system=ICD)],
        MET_NONE,
        ("No current malignancy on file",),
        id="only a condition another check assessed (Graves, thyroid set) -> malignancy none "
        "on file",
    ),
]


@pytest.mark.parametrize(("topic", "conditions", "expected", "says"), SAFETY_NET)
def test_condition_checks_never_say_none_on_file_for_what_they_did_not_understand(
    topic: str,
    conditions: list[dict[str, Any]],
    expected: tuple[Status, Severity, str],
    says: tuple[str, ...],
) -> None:
    finding = _finding(topic, _record(conditions))
    assert (finding.status, finding.severity, finding.reason) == expected
    shown = " ".join([finding.headline, *(e.text for e in finding.evidence)])
    for words in says:
        assert words in shown, shown


# -- the unassessed item -----------------------------------------------------------------------


def test_hypertension_only_is_listed_as_an_item_to_confirm_without_a_card() -> None:
    """The unassessed item names the condition; it is in the summary's checklist, not a card."""
    record = _record([_condition("Essential hypertension (disorder)", "59621000")])
    finding = _finding(UNASSESSED, record)
    assert (finding.status, finding.severity) == (Status.NOT_MET, Severity.INFO)
    assert (
        finding.headline
        == "1 current condition no check assessed: Essential hypertension (disorder)"
    )
    assert "SNOMED CT 59621000" in finding.evidence[0].text
    policy = load_policy()
    cards = build_cards(evaluate(record, ORDER, policy), ORDER, "hook-1", PID, policy)
    assert UNASSESSED not in {card_topic(c) for c in cards}
    summary = next(c for c in cards if card_topic(c) == "eligibility-summary")
    row = next(
        line
        for line in summary["detail"].splitlines()
        if "Current conditions no check assessed" in line
    )
    assert "| to confirm |" in row and "Essential hypertension (disorder)" in row
    checks = summary["extension"]["org.example.cds-service.checklist"]["checks"]
    item = next(c for c in checks if c["topic"] == UNASSESSED)
    assert (item["status"], item["indicator"]) == ("not-met", "info")


def test_an_item_to_confirm_alone_is_not_reported_as_all_checks_met() -> None:
    """With only the info item open, the summary stays info and says there is an item to confirm."""
    policy = load_policy()
    record = _record([_condition("Essential hypertension (disorder)", "59621000")])
    checked = [
        (
            rule,
            f
            if rule.topic == UNASSESSED
            else Finding(rule.topic, Status.MET, Severity.INFO, reason="none"),
        )
        for rule, f in evaluate(record, ORDER, policy)
    ]
    cards = build_cards(checked, ORDER, "hook-1", PID, policy)
    assert [card_topic(c) for c in cards] == ["eligibility-summary"]
    assert cards[0]["indicator"] == "info"
    assert "1 item to confirm" in cards[0]["summary"]
    assert "all" not in cards[0]["summary"]


def test_the_list_is_capped_newest_first_and_counts_the_rest() -> None:
    conditions = [
        _condition(f"Disorder number {n} (disorder)", f"99990{n:02d}", onset=f"20{10 + n}-01-01")
        for n in range(NAMES_SHOWN + 3)
    ]
    finding = _finding(UNASSESSED, _record(conditions))
    assert finding.facts["count"] == NAMES_SHOWN + 3
    assert [e.kind for e in finding.evidence][-1] == "and-more"
    assert finding.evidence[-1].text == "and 3 more"
    assert len(finding.evidence) == NAMES_SHOWN + 1
    assert "Disorder number 10" in finding.evidence[0].text  # onset 2020, the newest


def test_no_current_condition_leaves_the_item_met() -> None:
    finding = _finding(UNASSESSED, _record([]))
    assert (finding.status, finding.reason) == (Status.MET, "none")


def test_the_assessed_value_sets_are_every_condition_value_set_a_rule_reads() -> None:
    """Derived from RULES: each '-condition' value set a rule declares, and only those."""
    declared = {vs for rule in RULES for vs in rule.value_sets if vs.endswith("-condition")}
    assert {vs.id for vs in assessed_condition_sets()} == declared
    assert {"thyroid-disorder-condition", "malignancy-condition", "hiv-condition"} <= declared


@pytest.mark.parametrize(
    "vs_id",
    sorted(vs for rule in RULES for vs in rule.value_sets if vs.endswith("-condition")),
    ids=lambda vs: f"a current condition coded from {vs} is assessed, not listed",
)
def test_a_code_of_any_condition_value_set_is_assessed(vs_id: str) -> None:
    codes = sorted(all_value_sets()[vs_id].codes)
    if not codes:
        pytest.skip(f"{vs_id} lists no code (a site fills it)")
    system, code = codes[0]
    record = _record([_condition("Some disease (disorder)", code, system=system)])
    assert unassessed_conditions(record) == []


# -- the real Synthea bulk problem lists --------------------------------------------------------

BULK_ROWS = [
    pytest.param(
        SEPSIS_PATIENT,
        "active-infection",
        (Status.NOT_MET, Severity.WARNING, "confirm-resolved"),
        ("Sepsis", "1971-09-03"),
        id="Synthea a5cb8ce9: the active 1971 sepsis (SNOMED CT) -> active-infection review, "
        "not 'met: none on file'",
    ),
    pytest.param(
        SEPSIS_PATIENT,
        "malignancy",
        MET_NONE_RECOGNISED,
        ("recognised",),
        id="Synthea a5cb8ce9: no cancer, but unassessed disorders -> malignancy none recognised",
    ),
    pytest.param(
        CANCER_PATIENT,
        "malignancy",
        (Status.NOT_MET, Severity.WARNING, "current"),
        ("Non-small cell lung cancer", "Malignant neoplasm of breast", "Non-small cell carcinoma"),
        id="Synthea 129c6ac7: active lung and breast cancers (SNOMED CT) -> malignancy review "
        "naming each, not 'No current malignancy on file'",
    ),
    pytest.param(
        CANCER_PATIENT,
        "deceased",
        (Status.NOT_MET, Severity.CRITICAL, "deceased"),
        ("recorded as deceased on 1989-05-09",),
        id="Synthea 129c6ac7: deceasedDateTime 1989 -> critical",
    ),
    pytest.param(
        SEPSIS_PATIENT,
        "deceased",
        (Status.MET, Severity.INFO, "not-deceased"),
        ("not recorded as deceased",),
        id="Synthea a5cb8ce9: no death recorded -> met",
    ),
]


@pytest.mark.parametrize(("patient_id", "topic", "expected", "says"), BULK_ROWS)
def test_real_synthea_problem_lists(
    patient_id: str, topic: str, expected: tuple[Status, Severity, str], says: tuple[str, ...]
) -> None:
    finding = _finding(topic, _bulk(patient_id))
    assert (finding.status, finding.severity, finding.reason) == expected
    shown = " ".join([finding.headline, *(e.text for e in finding.evidence)])
    for words in says:
        assert words in shown, shown


def test_the_unassessed_item_of_a_real_problem_list_leaves_out_social_findings() -> None:
    """Synthea a5cb8ce9: the disorders are listed; 'Has a criminal record (finding)', 'Not in
    labor force (finding)' and 'Received higher education (finding)' are not."""
    finding = _finding(UNASSESSED, _bulk(SEPSIS_PATIENT))
    text = " ".join(e.text for e in finding.evidence)
    assert "Osteoporosis (disorder)" in text
    assert "Sepsis" not in text  # the infection value set recognises it: assessed
    assert "(finding)" not in text
    assert finding.facts["count"] == 4


# -- the keyword data ---------------------------------------------------------------------------

WORDS = [
    ("malignancy", "Adenocarcinoma of prostate", "adenocarcinoma"),
    ("malignancy", "Non-Hodgkin lymphoma", "hodgkin"),
    ("malignancy", "Acute myeloid leukaemia", "leukaemia"),
    ("malignancy", "Neoplasm, metastatic, to liver", "metastatic"),
    ("malignancy", "No evidence of metastasis", None),
    ("malignancy", "Precancerous lesion of cervix", None),
    ("malignancy", "Family history of cancer", None),
    ("malignancy", "Fear of cancer", None),
    ("infection", "Urinary tract infection", "infection"),
    ("infection", "Septic shock", "septic"),
    ("infection", "COVID-19", "covid-19"),
    ("infection", "Onychomycosis due to dermatophyte", "onychomycosis"),
    ("infection", "Hives", None),
    ("infection", "Non-infectious uveitis", None),
    ("infection", "Sepsis ruled out", None),
    ("infection", "Vaccination against influenza", None),
    ("infection", "Tuberculosis screening", None),
    ("infection", "Varicella immune", None),
    ("infection", "Anetoderma following varicella", None),
    ("infection", "Sepsis following a procedure", "sepsis"),
]


@pytest.mark.parametrize(
    ("words", "text", "found"),
    WORDS,
    ids=[f"{t!r} names {f!r} ({w})" if f else f"{t!r} names no {w}" for w, t, f in WORDS],
)
def test_keyword_classes_read_names_with_scoped_negation(
    words: str, text: str, found: str | None
) -> None:
    assert condition_keywords().classes[words].named_in(text) == found


# -- deceased -----------------------------------------------------------------------------------

DECEASED = [
    pytest.param(
        {"deceasedBoolean": True},
        (Status.NOT_MET, Severity.CRITICAL, "deceased"),
        "recorded as deceased (no date)",
        id="deceasedBoolean true -> critical",
    ),
    pytest.param(
        {"deceasedDateTime": "2026-10-01T08:00:00Z"},
        (Status.NOT_MET, Severity.CRITICAL, "deceased"),
        "recorded as deceased on 2026-10-01",
        id="deceasedDateTime -> critical naming the date",
    ),
    pytest.param(
        {"deceasedDateTime": "last spring"},
        (Status.NOT_MET, Severity.CRITICAL, "deceased"),
        "the date could not be read",
        id="an unreadable deceasedDateTime still says deceased -> critical",
    ),
    pytest.param(
        {"deceasedBoolean": False},
        (Status.MET, Severity.INFO, "not-deceased"),
        "",
        id="deceasedBoolean false -> met, no card",
    ),
    pytest.param(
        {},
        (Status.MET, Severity.INFO, "not-deceased"),
        "",
        id="no deceased element -> met, no card",
    ),
    pytest.param(
        {"deceasedBoolean": "yes"},
        (Status.UNKNOWN, Severity.WARNING, "met-but-unreadable"),
        "",
        id="deceasedBoolean neither true nor false -> unknown, never an all-clear",
    ),
]


@pytest.mark.parametrize(("extra", "expected", "evidence"), DECEASED)
def test_a_patient_recorded_as_deceased_gets_a_critical_finding(
    extra: dict[str, Any], expected: tuple[Status, Severity, str], evidence: str
) -> None:
    finding = _finding("deceased", _record([], _patient(**extra)))
    assert (finding.status, finding.severity, finding.reason) == expected
    assert evidence in " ".join(e.text for e in finding.evidence)


def test_a_deceased_patient_is_never_eligible_and_the_check_comes_first() -> None:
    """The deceased card leads (critical, first in the table); the summary is critical and does
    not say the checks were met."""
    assert RULES[0].topic == "deceased"
    policy = load_policy()
    record = _record([], _patient(deceasedBoolean=True))
    cards = build_cards(evaluate(record, ORDER, policy), ORDER, "hook-1", PID, policy)
    assert card_topic(cards[0]) == "deceased" and cards[0]["indicator"] == "critical"
    summary = next(c for c in cards if card_topic(c) == "eligibility-summary")
    assert summary["indicator"] == "critical" and "met" not in summary["summary"]


# -- wording shared by the condition checks ----------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "reason"),
    [(t, NONE_RECOGNISED) for t in CONDITION_TOPICS]
    + [(t, REVIEW_UNRECOGNISED) for t in ("malignancy", "active-infection")],
    ids=lambda v: str(v),
)
def test_each_check_that_can_say_none_recognised_or_review_has_its_sentences(
    topic: str, reason: str
) -> None:
    """These reason codes come from rules/unassessed.py under the calling check's topic."""
    assert topic in RULES_BY_TOPIC
    assert (topic, reason) in wording_table()
