"""The label and REMS checks of issue #4: contraindications, indication, age, pregnancy, baseline
labs, hepatitis B, recent vaccines, prior Campath, concurrent immunosuppression, thyroid and
malignancy.

End-to-end: the clinical table (fhir_fixtures/scenarios.json, asserted by tests/test_scenarios.py)
gives the expected cards; here, what a label card says and offers.
Unit tables: each check on small hand-written records, for the cases a scenario cannot show cheaply.
"""

from __future__ import annotations

import json
import pathlib
from datetime import date
from typing import Any

import pytest
from fixture_requests import fixture_request as _request

from cds_service.cards import worded
from cds_service.domain.findings import Finding, Severity, Status
from cds_service.domain.orders import AlemtuzumabOrder, OrderContext
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules import RULES, RULES_BY_TOPIC

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fhir_fixtures"
SUMMARY = "eligibility-summary"

# The checks of the patient's record (all but the order checks) that can give a card: an "info"
# check (the current conditions no check assessed) is an item of the summary's checklist only.
LABEL_TOPICS = {
    rule.topic
    for rule in RULES
    if rule.check.__module__ != "cds_service.domain.rules.order" and rule.indicator != "info"
}


def _scenario_table() -> list[dict[str, Any]]:
    """The rows of the clinical table."""
    return json.loads((FIXTURES / "scenarios.json").read_text(encoding="utf-8"))


def _cards(client, name: str) -> list[dict[str, Any]]:
    request = _request(name)
    response = client.post(f"/cds-services/lemtrada-{request['hook']}", json=request)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    return response.get_json()["cards"]


def test_every_label_topic_fires_in_some_scenario():
    """Every label topic has a scenario in fhir_fixtures/scenarios.json whose expected cards, at
    the scenario's own hook, carry it."""
    fired = {
        topic
        for row in _scenario_table()
        if "expected_cards" in row
        for topic in row["expected_cards"][row["hook"]]
    } - {SUMMARY}
    assert LABEL_TOPICS - fired == set()


def test_missing_baseline_labs_get_one_lab_order_each(module_client):
    """The work-up card offers one ServiceRequest per missing baseline test, each with its
    LOINC."""
    card = next(
        c
        for c in _cards(module_client, "baseline_labs_missing")
        if c["source"]["topic"]["code"] == "pretreatment-workup"
    )
    codes = [s["actions"][0]["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"]]
    assert codes == [
        "57021-8",
        "2160-0",
        "24356-8",
        "2890-2",
        "3016-3",
        "1742-6",
        "1920-8",
        "1975-2",
    ]
    assert card["source"]["label"] == "LEMTRADA REMS"
    assert all(
        s["actions"][0]["resource"]["resourceType"] == "ServiceRequest" for s in card["suggestions"]
    )


def test_pregnancy_warning_orders_hcg_and_advises_contraception(module_client):
    """Without a recent negative hCG the work-up card orders one and its line names the 4
    months."""
    card = next(
        c
        for c in _cards(module_client, "woman_of_reproductive_age_without_pregnancy_test")
        if c["source"]["topic"]["code"] == "pretreatment-workup"
    )
    assert "pregnancy test" in card["summary"]
    assert "4 months after each course" in card["detail"]
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["code"]["coding"][0] == {"system": "http://loinc.org", "code": "2118-8"}
    assert card["suggestions"][0]["label"] == "Order serum hCG (pregnancy test)"


def test_label_override_reasons_carry_display(module_client):
    """Cards of the label topics offer override reasons from the vocabulary, each with display."""
    card = next(
        c
        for c in _cards(module_client, "active_graves_disease")
        if c["source"]["topic"]["code"] == "review-before-start"
    )
    assert card["overrideReasons"] and all(r["display"] for r in card["overrideReasons"])


# -- unit tables --------------------------------------------------------------------------------

T0 = date(2026, 12, 7)
PID = "p1"
REF = {"reference": f"Patient/{PID}"}
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"


def _patient(gender: str | None = "female", born: str | None = "1986-11-28") -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": PID}
    if gender:
        patient["gender"] = gender
    if born:
        patient["birthDate"] = born
    return patient


def _condition(
    code: str,
    system: str = ICD,
    status: str | None = "active",
    verification: str = "confirmed",
    **extra: Any,
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c-{code}",
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": verification,
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": REF,
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
    return condition


def _hcg(day: str, positive: bool) -> dict[str, Any]:
    code = "POS" if positive else "NEG"
    return {
        "resourceType": "Observation",
        "id": f"hcg-{day}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2106-3"}]},
        "subject": REF,
        "effectiveDateTime": day,
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": code,
                    }
                ]
            }
        ],
    }


def _lab(loinc: str, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"lab-{loinc}-{day}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": REF,
        "effectiveDateTime": day,
        "valueQuantity": {"value": 1.0, "unit": "1"},
    }


BASELINE = ["57021-8", "2160-0", "24356-8", "2890-2", "3016-3", "1742-6", "1920-8", "1975-2"]


def _med(rtype: str, status: str, concept: dict[str, Any], **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": rtype,
        "id": f"m-{status}-{len(extra)}",
        "status": status,
        "medicationCodeableConcept": concept,
        "subject": REF,
        **extra,
    }
    if rtype == "MedicationRequest":
        resource["intent"] = "order"
    return resource


def _imm(cvx: str, day: str, status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": f"imm-{cvx}-{day}",
        "status": status,
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx}]},
        "patient": REF,
        "occurrenceDateTime": day,
    }


def _allergy(
    concept: dict[str, Any],
    clinical: str | None = "active",
    verification: str = "confirmed",
    **extra: Any,
) -> dict[str, Any]:
    allergy: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": "a1",
        "code": concept,
        "patient": REF,
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": verification,
                }
            ]
        },
        **extra,
    }
    if clinical:
        allergy["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": clinical,
                }
            ]
        }
    return allergy


def _run(
    topic: str, resources: list[dict[str, Any]], patient: dict[str, Any] | None = None
) -> Finding:
    record = PatientRecord.build(PID, [patient or _patient(), *resources])
    order = OrderContext(
        hook="order-select",
        order=AlemtuzumabOrder({"id": "o1"}, "test", ()),
        t0=T0,
        t0_source="test",
        draft_orders=(),
    )
    # Worded as on a card: a finding with a reason code gets its sentences from wording.toml.
    return worded(RULES_BY_TOPIC[topic].check(record, order, load_policy()), load_policy())


MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN
W, C, OK = Severity.WARNING, Severity.CRITICAL, Severity.INFO
LEMTRADA = {"coding": [{"system": RX, "code": "1594659"}]}

# (case, topic, resources, patient or None, expected status, expected severity)
UNIT_CASES = [
    (
        "allergy coded lemtrada without clinical status is a hard stop",
        "hypersensitivity",
        [_allergy(LEMTRADA, clinical=None)],
        None,
        NOT_MET,
        C,
    ),
    (
        "allergy named alemtuzumab only in text is a hard stop",
        "hypersensitivity",
        [_allergy({"text": "ALEMTUZUMAB"})],
        None,
        NOT_MET,
        C,
    ),
    (
        "resolved lemtrada allergy is not a contraindication",
        "hypersensitivity",
        [_allergy(LEMTRADA, clinical="resolved")],
        None,
        MET,
        OK,
    ),
    (
        "refuted lemtrada allergy is not a contraindication",
        "hypersensitivity",
        [_allergy(LEMTRADA, verification="refuted")],
        None,
        MET,
        OK,
    ),
    (
        "egg allergy is not an alemtuzumab allergy",
        "hypersensitivity",
        [_allergy({"text": "Allergy to eggs"})],
        None,
        MET,
        OK,
    ),
    (
        "hiv condition marked inactive is still a contraindication",
        "active-infection",
        [_condition("B20", status="inactive")],
        None,
        NOT_MET,
        C,
    ),
    (
        "hepatitis c condition without clinical status counts as current",
        "active-infection",
        [_condition("B18.2", status=None)],
        None,
        NOT_MET,
        C,
    ),
    (
        "hepatitis c condition with abatement and no status is not current",
        "active-infection",
        [_condition("B18.2", status=None, abatementDateTime="2020-01-01")],
        None,
        MET,
        OK,
    ),
    (
        "refuted tuberculosis is not an active infection",
        "active-infection",
        [_condition("A15.0", verification="refuted")],
        None,
        MET,
        OK,
    ),
    (
        "relapsing ms in remission is still the indication",
        "indication",
        [_condition("426373005", system=SCT, status="remission")],
        None,
        MET,
        OK,
    ),
    (
        "resolved ms is not a current diagnosis",
        "indication",
        [_condition("G35", status="resolved")],
        None,
        UNKNOWN,
        W,
    ),
    (
        "primary progressive ms by icd-10-cm is not indicated",
        "indication",
        [_condition("G35.B0")],
        None,
        NOT_MET,
        W,
    ),
    (
        "sixteen-year-old is under the pediatric age",
        "age",
        [],
        _patient(born="2010-12-08"),
        NOT_MET,
        W,
    ),
    (
        "seventeenth birthday on the start day is adult",
        "age",
        [],
        _patient(born="2009-12-07"),
        MET,
        OK,
    ),
    ("missing birth date is not an all-clear", "age", [], _patient(born=None), UNKNOWN, W),
    (
        "birth year only that may be under 17 is unknown",
        "age",
        [],
        _patient(born="2009"),
        UNKNOWN,
        W,
    ),
    ("man needs no pregnancy test", "pregnancy", [], _patient(gender="male"), MET, OK),
    (
        "woman over 55 needs no pregnancy test",
        "pregnancy",
        [],
        _patient(born="1960-01-01"),
        MET,
        OK,
    ),
    (
        "girl under 12 needs no pregnancy test",
        "pregnancy",
        [],
        _patient(born="2019-05-22"),
        MET,
        OK,
    ),
    (
        "unknown gender of reproductive age needs a test",
        "pregnancy",
        [],
        _patient(gender="unknown"),
        UNKNOWN,
        W,
    ),
    (
        "missing gender and birth date needs a test",
        "pregnancy",
        [],
        _patient(gender=None, born=None),
        UNKNOWN,
        W,
    ),
    (
        "negative hcg within seven days is met",
        "pregnancy",
        [_hcg("2026-12-01", False)],
        None,
        MET,
        OK,
    ),
    (
        "negative hcg eight days before is too old",
        "pregnancy",
        [_hcg("2026-11-29", False)],
        None,
        UNKNOWN,
        W,
    ),
    (
        "newer negative hcg supersedes an older positive",
        "pregnancy",
        [_hcg("2026-10-01", True), _hcg("2026-12-04", False)],
        None,
        MET,
        OK,
    ),
    (
        "active pregnancy condition is a hard stop",
        "pregnancy",
        [_condition("77386006", system=SCT), _hcg("2026-12-04", False)],
        None,
        NOT_MET,
        C,
    ),
    (
        "resolved pregnancy with a negative hcg is met",
        "pregnancy",
        [_condition("77386006", system=SCT, status="resolved"), _hcg("2026-12-04", False)],
        None,
        MET,
        OK,
    ),
    (
        "all eight baseline labs within 30 days are met",
        "baseline-labs",
        [_lab(code, "2026-11-10") for code in BASELINE],
        None,
        MET,
        OK,
    ),
    (
        "one baseline lab older than 30 days is missing",
        "baseline-labs",
        [_lab(code, "2026-11-10") for code in BASELINE[:-1]] + [_lab("1975-2", "2026-11-06")],
        None,
        UNKNOWN,
        W,
    ),
    (
        "shingrix 41 days before is inside the gap",
        "non-live-vaccine-gap",
        [_imm("187", "2026-10-27")],
        None,
        NOT_MET,
        W,
    ),
    (
        "jynneos 20 days before is inside the gap",
        "non-live-vaccine-gap",
        [_imm("206", "2026-11-17")],
        None,
        NOT_MET,
        W,
    ),
    (
        "inactivated vaccine exactly 42 days before is fine",
        "non-live-vaccine-gap",
        [_imm("140", "2026-10-26")],
        None,
        MET,
        OK,
    ),
    (
        "live mmr is left to the live-vaccine rule",
        "non-live-vaccine-gap",
        [_imm("03", "2026-11-30")],
        None,
        MET,
        OK,
    ),
    (
        "ambiguous zoster vaccine is left to the live-vaccine rule",
        "non-live-vaccine-gap",
        [_imm("188", "2026-11-30")],
        None,
        MET,
        OK,
    ),
    (
        "tuberculin skin test is not a vaccine",
        "non-live-vaccine-gap",
        [_imm("96", "2026-11-30")],
        None,
        MET,
        OK,
    ),
    (
        "vaccine not done is ignored",
        "non-live-vaccine-gap",
        [_imm("140", "2026-11-30", status="not-done")],
        None,
        MET,
        OK,
    ),
    (
        "campath named in text is prior campath",
        "prior-campath",
        [_med("MedicationStatement", "completed", {"text": "MabCampath 30 mg"})],
        None,
        NOT_MET,
        W,
    ),
    (
        "campath not taken does not count",
        "prior-campath",
        [_med("MedicationStatement", "not-taken", {"text": "Campath"})],
        None,
        MET,
        OK,
    ),
    (
        "lemtrada history is not campath",
        "prior-campath",
        [_med("MedicationStatement", "completed", LEMTRADA)],
        None,
        MET,
        OK,
    ),
    (
        "active azathioprine request without end is concurrent",
        "concurrent-immunosuppression",
        [_med("MedicationRequest", "active", {"text": "Azathioprine 50 mg tablet"})],
        None,
        NOT_MET,
        W,
    ),
    (
        "ocrelizumab statement ending after the start is concurrent",
        "concurrent-immunosuppression",
        [
            _med(
                "MedicationStatement",
                "active",
                {"text": "Ocrevus"},
                effectivePeriod={"start": "2025-01-01", "end": "2027-01-01"},
            )
        ],
        None,
        NOT_MET,
        W,
    ),
    (
        "stopped dmt is not concurrent",
        "concurrent-immunosuppression",
        [_med("MedicationStatement", "stopped", {"text": "fingolimod"})],
        None,
        MET,
        OK,
    ),
    (
        "active statement ended before the start is not concurrent",
        "concurrent-immunosuppression",
        [
            _med(
                "MedicationStatement",
                "active",
                {"text": "fingolimod"},
                effectivePeriod={"start": "2025-01-01", "end": "2026-11-01"},
            )
        ],
        None,
        MET,
        OK,
    ),
    (
        "methylprednisolone is not an immunosuppressant for this check",
        "concurrent-immunosuppression",
        [_med("MedicationRequest", "active", {"text": "methylprednisolone 1 g IV"})],
        None,
        MET,
        OK,
    ),
    (
        "active hypothyroidism is a thyroid warning",
        "thyroid-disorder",
        [_condition("E03.9")],
        None,
        NOT_MET,
        W,
    ),
    (
        "thyroid disorder in remission is not current",
        "thyroid-disorder",
        [_condition("E03.9", status="remission")],
        None,
        MET,
        OK,
    ),
    (
        "snomed malignant neoplastic disease is a malignancy",
        "malignancy",
        [_condition("363346000", system=SCT)],
        None,
        NOT_MET,
        W,
    ),
    (
        "lymphoma c83.30 is a malignancy by prefix",
        "malignancy",
        [_condition("C83.30")],
        None,
        NOT_MET,
        W,
    ),
    (
        "carcinoma in situ d05.10 is not a malignancy here",
        "malignancy",
        [_condition("D05.10")],
        None,
        MET,
        OK,
    ),
    (
        "history of malignancy z85.3 is not current",
        "malignancy",
        [_condition("Z85.3")],
        None,
        MET,
        OK,
    ),
]


@pytest.mark.parametrize(
    ("case", "topic", "resources", "patient", "status", "severity"),
    UNIT_CASES,
    ids=[c[0] for c in UNIT_CASES],
)
def test_label_check_on_small_record(case, topic, resources, patient, status, severity):
    """Each label check reaches the expected status and severity on a hand-written record."""
    finding = _run(topic, resources, patient)
    assert (finding.status, finding.severity) == (status, severity), finding.headline
    assert len(finding.headline) < 140


def test_unreadable_thyroid_condition_is_not_an_all_clear():
    """A thyroid Condition that fails R4 validation is reported as unreadable evidence."""
    bad = _condition("E05.00")
    bad["onsetDateTime"] = "not a date"
    finding = _run("thyroid-disorder", [bad])
    assert finding.unreadable and finding.unreadable[0].reference == "Condition/c-E05.00"


def test_baseline_card_lists_only_the_missing_test():
    """With one stale test, the baseline finding names it and suggests exactly that one order."""
    finding = _run(
        "baseline-labs",
        [_lab(code, "2026-11-10") for code in BASELINE[:-1]] + [_lab("1975-2", "2026-11-06")],
    )
    assert "total bilirubin" in finding.headline
    assert [s.code[1] for s in finding.suggestions] == ["1975-2"]


@pytest.mark.parametrize(
    ("code", "malignant"),
    [
        ("C00.0", True),
        ("C4A.9", True),
        ("C7A.00", True),
        ("C7B.8", True),
        ("C96.9", True),
        ("C97", False),
        ("D49.9", False),
        ("c50.911", True),
        ("C50911", True),
    ],
)
def test_icd10_malignant_range(code, malignant):
    """ICD-10-CM C00-C96 (with C4A, C7A, C7B) is in the malignancy value set by its regex filter,
    with or without the dot; D codes and C97+ are not."""
    from cds_service.domain.fhirdata import normalise_code
    from cds_service.domain.terminology import value_set

    assert (normalise_code(ICD, code) in value_set("malignancy-condition")) is malignant
