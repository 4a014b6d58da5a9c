"""Terminology with hierarchies (issue 13): each condition class is recognised whether it is coded
in SNOMED CT (a specific descendant, from the public expansions shipped in the value sets) or in
ICD-10-CM (a specific subcode, through the value set's regex filter), and the controls that only
look alike stay silent. Infections are current only when recent and serious; stale or minor
entries ask the pharmacist to confirm they are resolved.

Read as a table: one clinical sentence per row.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.cards import worded
from cds_service.domain.fhirdata import ICD10CM, normalise_code
from cds_service.domain.findings import Finding, Severity, Status
from cds_service.domain.orders import AlemtuzumabOrder, OrderContext
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules import RULES_BY_TOPIC
from cds_service.domain.terminology import ValueSet, parse_value_set, value_set

T0 = date(2026, 12, 7)
RECENT = "2026-11-20"  # 17 days before the planned start: inside infection_recent_window
OLD = "1971-05-02"  # a stale problem-list entry, as in the real Synthea records
PID = "p1"
ICD = ICD10CM
SCT = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def _condition(
    system: str, code: str, status: str = "active", onset: str | None = RECENT
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c-{code}",
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{PID}"},
    }
    if onset:
        condition["onsetDateTime"] = onset
    return condition


def _run(topic: str, condition: dict[str, Any]) -> Finding:
    patient = {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1990-03-01"}
    record = PatientRecord.build(PID, [patient, condition])
    order = OrderContext(
        hook="order-select",
        order=AlemtuzumabOrder({"id": "o1"}, "test", ()),
        t0=T0,
        t0_source="test",
        draft_orders=(),
    )
    return worded(RULES_BY_TOPIC[topic].check(record, order, load_policy()), load_policy())


C, W, OK = Severity.CRITICAL, Severity.WARNING, Severity.INFO

# (sentence, topic, Condition, expected severity, expected reason)
CASES = [
    # malignancy
    (
        "lung cancer coded as a SNOMED CT descendant (NSCLC, TNM stage 1) is a malignancy",
        "malignancy",
        _condition(SCT, "424132000"),
        W,
        "current",
    ),
    (
        "breast cancer coded in SNOMED CT is a malignancy",
        "malignancy",
        _condition(SCT, "254837009"),
        W,
        "current",
    ),
    (
        "breast cancer coded as an ICD-10-CM subcode C50.911 is a malignancy",
        "malignancy",
        _condition(ICD, "C50.911"),
        W,
        "current",
    ),
    (
        "Merkel cell carcinoma C4A.9 written without its dot is a malignancy",
        "malignancy",
        _condition(ICD, "C4A9"),
        W,
        "current",
    ),
    (
        "a benign neoplasm of the colon D12.5 is not a malignancy",
        "malignancy",
        _condition(ICD, "D12.5"),
        OK,
        "none-recognised",
    ),
    (
        "a screening mammogram encounter Z12.31 is not a malignancy",
        "malignancy",
        _condition(ICD, "Z12.31"),
        OK,
        "none",
    ),
    (
        "a personal history of breast cancer Z85.3 is not a current malignancy",
        "malignancy",
        _condition(ICD, "Z85.3"),
        OK,
        "none",
    ),
    (
        "a suspected lung cancer (SNOMED CT situation) is not a malignancy",
        "malignancy",
        _condition(SCT, "162573006"),
        OK,
        "none-recognised",
    ),
    # thyroid
    (
        "hypothyroidism coded in SNOMED CT is a thyroid disorder",
        "thyroid-disorder",
        _condition(SCT, "40930008"),
        W,
        "current",
    ),
    (
        "Hashimoto thyroiditis coded in SNOMED CT is a thyroid disorder",
        "thyroid-disorder",
        _condition(SCT, "21983002"),
        W,
        "current",
    ),
    (
        "Graves disease coded in SNOMED CT is a thyroid disorder",
        "thyroid-disorder",
        _condition(SCT, "353295004"),
        W,
        "current",
    ),
    (
        "postprocedural hypothyroidism E89.0 is a thyroid disorder",
        "thyroid-disorder",
        _condition(ICD, "E89.0"),
        W,
        "current",
    ),
    (
        "autoimmune thyroiditis E06.3 is a thyroid disorder",
        "thyroid-disorder",
        _condition(ICD, "E06.3"),
        W,
        "current",
    ),
    (
        "a nontoxic single thyroid nodule E04.1 is not a thyroid disorder for this check",
        "thyroid-disorder",
        _condition(ICD, "E04.1"),
        OK,
        "none-recognised",
    ),
    (
        "a history of Graves disease (SNOMED CT) is not a current thyroid disorder",
        "thyroid-disorder",
        _condition(SCT, "137871000119109"),
        OK,
        "none-recognised",
    ),
    # infection: recent and serious is a hard stop
    (
        "a SNOMED CT sepsis with onset 17 days before the start is a hard stop",
        "active-infection",
        _condition(SCT, "91302008"),
        C,
        "infection",
    ),
    (
        "a sepsis coded A41.9 with onset 17 days before the start is a hard stop",
        "active-infection",
        _condition(ICD, "A41.9"),
        C,
        "infection",
    ),
    (
        "a recent pneumonia coded in SNOMED CT is a hard stop",
        "active-infection",
        _condition(SCT, "233604007"),
        C,
        "infection",
    ),
    (
        "a recent E. coli urinary tract infection coded in SNOMED CT is a hard stop",
        "active-infection",
        _condition(SCT, "301011002"),
        C,
        "infection",
    ),
    (
        "a recent herpes zoster coded in SNOMED CT is a hard stop",
        "active-infection",
        _condition(SCT, "4740000"),
        C,
        "infection",
    ),
    (
        "a recent herpes zoster coded B02.9 is a hard stop",
        "active-infection",
        _condition(ICD, "B02.9"),
        C,
        "infection",
    ),
    (
        "a recent COVID-19 coded in SNOMED CT is a hard stop",
        "active-infection",
        _condition(SCT, "840539006"),
        C,
        "infection",
    ),
    (
        "a recent COVID-19 coded U07.1 is a hard stop",
        "active-infection",
        _condition(ICD, "U07.1"),
        C,
        "infection",
    ),
    (
        "a recent cellulitis of the leg coded L03.115 is a hard stop",
        "active-infection",
        _condition(ICD, "L03.115"),
        C,
        "infection",
    ),
    # infection: stale, undated or minor entries are review items
    (
        "a 1971 sepsis still marked active is a review item, not a hard stop",
        "active-infection",
        _condition(SCT, "91302008", onset=OLD),
        W,
        "confirm-resolved",
    ),
    (
        "an active sepsis with no onset or recorded date is a review item",
        "active-infection",
        _condition(SCT, "91302008", onset=None),
        W,
        "confirm-resolved-undated",
    ),
    (
        "a recent nail fungus (onychomycosis of toenails, SNOMED CT) is a review item",
        "active-infection",
        _condition(SCT, "403059006"),
        W,
        "confirm-resolved",
    ),
    (
        "a recent onychomycosis coded B35.1 is a review item",
        "active-infection",
        _condition(ICD, "B35.1"),
        W,
        "confirm-resolved",
    ),
    (
        "a recent viral sinusitis (SNOMED CT) is a review item",
        "active-infection",
        _condition(SCT, "444814009"),
        W,
        "confirm-resolved",
    ),
    (
        "a resolved sepsis is silent",
        "active-infection",
        _condition(SCT, "91302008", status="resolved"),
        OK,
        "none",
    ),
    # TB, HIV and hepatitis keep today's behaviour: a hard stop whatever the date
    (
        "active tuberculosis recorded in 1971 is still a hard stop",
        "active-infection",
        _condition(ICD, "A15.0", onset=OLD),
        C,
        "infection",
    ),
    (
        "an HIV infection marked inactive is still a hard stop",
        "active-infection",
        _condition(ICD, "B20", status="inactive", onset=OLD),
        C,
        "infection",
    ),
    # pregnancy: only currently pregnant concepts
    (
        "a normal pregnancy coded in SNOMED CT is a current pregnancy",
        "pregnancy",
        _condition(SCT, "72892002"),
        C,
        "may-be-pregnant",
    ),
    (
        "supervision of a high-risk pregnancy O09.511 is a current pregnancy",
        "pregnancy",
        _condition(ICD, "O09.511"),
        C,
        "may-be-pregnant",
    ),
    (
        "pre-existing hypertension in the first trimester O10.011 is a current pregnancy",
        "pregnancy",
        _condition(ICD, "O10.011"),
        C,
        "may-be-pregnant",
    ),
]

NOT_PREGNANT = [
    (
        "a miscarriage in the first trimester (SNOMED CT) is not a current pregnancy",
        _condition(SCT, "19169002"),
    ),
    ("a complete miscarriage (SNOMED CT) is not a current pregnancy", _condition(SCT, "156073000")),
    ("a spontaneous abortion O03.9 is not a current pregnancy", _condition(ICD, "O03.9")),
    ("a delivery O80 is not a current pregnancy", _condition(ICD, "O80")),
    ("routine postpartum follow-up Z39.2 is not a current pregnancy", _condition(ICD, "Z39.2")),
    (
        "hypertension complicating the puerperium O10.03 is not a current pregnancy",
        _condition(ICD, "O10.03"),
    ),
]


@pytest.mark.parametrize(
    ("topic", "condition", "severity", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_condition_class_is_recognised_in_either_system(topic, condition, severity, reason):
    finding = _run(topic, condition)
    assert (finding.severity, finding.reason) == (severity, reason)
    assert finding.status is (Status.MET if severity is OK else Status.NOT_MET)


@pytest.mark.parametrize(
    "condition", [case[1] for case in NOT_PREGNANT], ids=[case[0] for case in NOT_PREGNANT]
)
def test_pregnancy_ended_is_not_a_current_pregnancy(condition):
    finding = _run("pregnancy", condition)
    assert finding.reason != "may-be-pregnant"
    assert finding.severity is not Severity.CRITICAL


def test_review_item_names_the_infection_and_its_date():
    """The warning asks to confirm resolution and says which entry and since when."""
    finding = _run("active-infection", _condition(SCT, "91302008", onset=OLD))
    assert "1971-05-02" in finding.headline
    assert "confirm it is resolved" in finding.headline
    assert "91302008" in " ".join(str(e.facts) for e in finding.evidence)


# (sentence, value set, system, code, member)
MEMBERSHIP = [
    (
        "relapsing-remitting MS coded as ICD-10-CM G35.A is an MS diagnosis",
        "ms-diagnosis-condition",
        ICD,
        "G35.A",
        True,
    ),
    (
        "secondary progressive MS coded G35.C1 is an MS diagnosis",
        "ms-diagnosis-condition",
        ICD,
        "G35.C1",
        True,
    ),
    (
        "relapsing-remitting MS coded in SNOMED CT is an MS diagnosis",
        "ms-diagnosis-condition",
        SCT,
        "426373005",
        True,
    ),
    (
        "neuromyelitis optica G36.0 is not an MS diagnosis",
        "ms-diagnosis-condition",
        ICD,
        "G36.0",
        False,
    ),
    (
        "primary progressive MS coded G35.B1 is primary progressive",
        "ms-primary-progressive-condition",
        ICD,
        "G35.B1",
        True,
    ),
    (
        "relapsing-remitting MS G35.A is not primary progressive",
        "ms-primary-progressive-condition",
        ICD,
        "G35.A",
        False,
    ),
    (
        "varicella coded B01.9 is a varicella/zoster history",
        "varicella-zoster-history-condition",
        ICD,
        "B01.9",
        True,
    ),
    (
        "zoster with ophthalmic complication B02.39 is a varicella/zoster history",
        "varicella-zoster-history-condition",
        ICD,
        "B02.39",
        True,
    ),
    (
        "varicella coded in SNOMED CT is a varicella/zoster history",
        "varicella-zoster-history-condition",
        SCT,
        "38907003",
        True,
    ),
    (
        "herpes simplex B00.9 is not a varicella/zoster history",
        "varicella-zoster-history-condition",
        ICD,
        "B00.9",
        False,
    ),
]


@pytest.mark.parametrize(
    ("vs_id", "system", "code", "member"),
    [case[1:] for case in MEMBERSHIP],
    ids=[case[0] for case in MEMBERSHIP],
)
def test_value_set_membership(vs_id, system, code, member):
    assert (normalise_code(system, code) in value_set(vs_id)) is member


def _regex_set(**compose: Any) -> ValueSet:
    return parse_value_set(
        {"resourceType": "ValueSet", "id": "t", "url": "urn:t", "compose": compose}
    )


def test_regex_applies_to_the_code_as_written_with_its_dot():
    """A filter written with the dot matches both spellings; it must match the whole code."""
    vs = _regex_set(
        include=[
            {"system": ICD, "filter": [{"property": "code", "op": "regex", "value": r"E05\.0.*"}]}
        ]
    )
    assert normalise_code(ICD, "E05.00") in vs
    assert normalise_code(ICD, "e0500") in vs
    assert normalise_code(ICD, "E05.10") not in vs
    assert normalise_code(ICD, "XE05.00") not in vs


def test_exclude_wins_over_include_and_is_a_roots_are_kept_as_data():
    vs = _regex_set(
        include=[
            {"system": ICD, "filter": [{"property": "code", "op": "regex", "value": r"O.*"}]},
            {"system": SCT, "filter": [{"property": "concept", "op": "is-a", "value": "77386006"}]},
            {"system": SCT, "concept": [{"code": "72892002"}, {"code": "19169002"}]},
        ],
        exclude=[
            {"system": ICD, "filter": [{"property": "code", "op": "regex", "value": r"O0[0-8].*"}]},
            {"system": SCT, "concept": [{"code": "19169002"}]},
        ],
    )
    assert normalise_code(ICD, "O09.511") in vs
    assert normalise_code(ICD, "O03.9") not in vs
    assert (SCT, "72892002") in vs and (SCT, "19169002") not in vs
    assert vs.roots == ((SCT, "77386006"),)
    assert (SCT, "77386006") not in vs  # a root is not evaluated locally


def test_an_unsupported_filter_is_refused():
    with pytest.raises(ValueError, match="unsupported filter"):
        _regex_set(
            include=[
                {"system": SCT, "filter": [{"property": "code", "op": "regex", "value": "1.*"}]}
            ]
        )


def test_condition_coded_by_range_is_found_in_a_record():
    """PatientRecord.coded finds resources whose code only a regex filter accepts."""
    record = PatientRecord.build(PID, [_condition(ICD, "C34.90"), _condition(ICD, "D12.5")])
    found = record.coded("Condition", value_set("malignancy-condition"))
    assert [c["id"] for c in found] == ["c-C34.90"]
