"""Small tables for the pure domain: codes, dates, T0, result reading, product recognition."""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds_service.domain.fhirdata import CVX, ICD10CM, LOINC, DateSpan, normalise_code, parse_date
from cds_service.domain.orders import Product, classify, planned_start
from cds_service.domain.record import CONTAINED, name_medication
from cds_service.domain.results import Meaning, read_meaning
from cds_service.domain.terminology import value_set

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
PACKAGE = Path(__file__).resolve().parent.parent / "cds_service"


@pytest.mark.parametrize(
    "system,given,expected",
    [
        (CVX, "03", "3"),
        (CVX, "3", "3"),
        (CVX, "187", "187"),
        (ICD10CM, "g35.a", "G35A"),
        (ICD10CM, "B02.21", "B0221"),
        (LOINC, "2106-3", "2106-3"),
    ],
)
def test_codes_are_normalised_before_lookup(system: str, given: str, expected: str) -> None:
    """CVX loses leading zeros and ICD-10-CM its dots, so '03' is MMR like '3'."""
    assert normalise_code(system, given) == (system, expected)


def test_mmr_sent_zero_padded_is_a_live_vaccine() -> None:
    """The live-vaccine value set matches CVX '03' as sent by Synthea."""
    assert normalise_code(CVX, "03") in value_set("live-vaccines-cvx")
    assert normalise_code(CVX, "187") not in value_set("live-vaccines-cvx")  # Shingrix
    assert normalise_code(CVX, "206") not in value_set("live-vaccines-cvx")  # JYNNEOS


def test_loinc_2106_3_is_matched_with_its_system_only() -> None:
    """The same string is a CDC race code: value sets match (system, code), never code alone."""
    assert (LOINC, "2106-3") in value_set("pregnancy-test-loinc")
    assert ("urn:oid:2.16.840.1.113883.6.238", "2106-3") not in value_set("pregnancy-test-loinc")


@pytest.mark.parametrize(
    "value,span",
    [
        ("2026-11-16", DateSpan(date(2026, 11, 16), date(2026, 11, 16))),
        ("2026-11-16T23:30:00-05:00", DateSpan(date(2026, 11, 16), date(2026, 11, 16))),
        ("2026-02", DateSpan(date(2026, 2, 1), date(2026, 2, 28))),
        ("2024", DateSpan(date(2024, 1, 1), date(2024, 12, 31))),
        ("last spring", None),
        (20261116, None),
        ("2026-13-01", None),
    ],
)
def test_fhir_dates_are_read_as_the_days_they_may_mean(value: Any, span: DateSpan | None) -> None:
    """Partial dates become ranges (rules use the end that is safer), garbage becomes None."""
    assert parse_date(value) == span


TODAY = date(2026, 11, 21)


@pytest.mark.parametrize(
    "case,request_fields,expected",
    [
        (
            "earliest bounds start wins",
            {
                "dosageInstruction": [
                    {"timing": {"repeat": {"boundsPeriod": {"start": "2026-12-09"}}}},
                    {"timing": {"repeat": {"boundsPeriod": {"start": "2026-12-07"}}}},
                ],
                "authoredOn": "2026-11-01",
            },
            (date(2026, 12, 7), "dosage timing start"),
        ),
        (
            "timing event counts",
            {"dosageInstruction": [{"timing": {"event": ["2026-12-20T08:00:00Z"]}}]},
            (date(2026, 12, 20), "dosage timing start"),
        ),
        (
            "authoredOn when no timing",
            {"authoredOn": "2026-11-30"},
            (date(2026, 11, 30), "the date the order was written"),
        ),
        ("today when nothing is given", {}, (TODAY, "today (the order has no start date)")),
    ],
)
def test_planned_start_t0(
    case: str, request_fields: dict[str, Any], expected: tuple[date, str]
) -> None:
    """T0 is the earliest dosage start or event, else authoredOn, else today."""
    assert planned_start({"resourceType": "MedicationRequest", **request_fields}, TODAY) == expected


def obs(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", **fields}


def coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


@pytest.mark.parametrize(
    "case,observation,nucleic,meaning,source",
    [
        (
            "interpretation POS",
            obs(interpretation=[coded(V3, "POS")]),
            False,
            Meaning.POSITIVE,
            "interpretation",
        ),
        (
            "interpretation beats valueString",
            obs(interpretation=[coded(V3, "NEG")], valueString="positive"),
            False,
            Meaning.NEGATIVE,
            "interpretation",
        ),
        (
            "SNOMED detected value",
            obs(valueCodeableConcept=coded("http://snomed.info/sct", "260373001")),
            False,
            Meaning.POSITIVE,
            "coded-value",
        ),
        (
            "LOINC answer negative",
            obs(valueCodeableConcept=coded(LOINC, "LA6577-6")),
            False,
            Meaning.NEGATIVE,
            "coded-value",
        ),
        (
            "non-reactive text",
            obs(valueString="Non-reactive"),
            False,
            Meaning.NEGATIVE,
            "text",
        ),
        (
            "not detected text",
            obs(valueString="HCV RNA not detected"),
            False,
            Meaning.NEGATIVE,
            "text",
        ),
        ("reactive text", obs(valueString="Reactive"), False, Meaning.POSITIVE, "text"),
        (
            "equivocal text",
            obs(valueString="equivocal, repeat"),
            False,
            Meaning.INDETERMINATE,
            "text",
        ),
        (
            "a bare number says nothing",
            obs(valueQuantity={"value": 0.3}),
            False,
            Meaning.INDETERMINATE,
            "number-without-reading",
        ),
        (
            "viral load below the limit of quantification is detected, not quantified",
            obs(valueQuantity={"value": 15, "comparator": "<"}),
            True,
            Meaning.POSITIVE,
            "viral-load-below-limit",
        ),
        (
            "viral load detected",
            obs(valueQuantity={"value": 15000}),
            True,
            Meaning.POSITIVE,
            "viral-load-detected",
        ),
        ("nothing at all", obs(), False, Meaning.INDETERMINATE, "nothing-readable"),
    ],
)
def test_lab_results_are_read_interpretation_first(
    case: str, observation: dict[str, Any], nucleic: bool, meaning: Meaning, source: str
) -> None:
    """Interpretation, then coded value, then text; nothing readable is indeterminate."""
    assert read_meaning(observation, nucleic) == (meaning, source)


@pytest.mark.parametrize(
    "case,codes,words,product",
    [
        ("Lemtrada branded drug code", [(RXNORM, "1594663")], "", Product.LEMTRADA),
        ("alemtuzumab ingredient code only", [(RXNORM, "117055")], "", Product.LEMTRADA),
        ("named only in text", [], "LEMTRADA 12 mg IV", Product.LEMTRADA),
        ("alemtuzumab in lower case text", [], "alemtuzumab infusion", Product.LEMTRADA),
        ("Campath product code", [(RXNORM, "828267")], "", Product.CAMPATH),
        (
            "ingredient code but Campath in text",
            [(RXNORM, "117055")],
            "Campath 30 mg",
            Product.CAMPATH,
        ),
        ("another drug", [(RXNORM, "197311")], "acyclovir", Product.OTHER),
        ("a word that merely contains the name", [], "prelemtradaxyz", Product.OTHER),
    ],
)
def test_lemtrada_orders_are_told_apart_from_campath_and_other_drugs(
    case: str, codes: list[tuple[str, str]], words: str, product: Product
) -> None:
    """Lemtrada by RxNorm code or name; Campath (CLL product) is never a Lemtrada order."""
    assert classify(codes, words) is product


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_domain_is_pure_and_flask_and_fhir_resources_stay_in_their_layers() -> None:
    """The domain imports no flask, requests or sqlalchemy; only models.py imports
    fhir.resources."""
    for path in PACKAGE.rglob("*.py"):
        imported = _imports(path)
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("domain/"):
            assert not imported & {"flask", "requests", "sqlalchemy", "werkzeug"}, relative
        if "fhir" in imported and relative != "models.py":
            pytest.fail(f"{relative} imports fhir.resources")
        if "flask" in imported:
            assert relative in {
                "http_api.py",
                "app.py",
                "cors.py",
                "auth.py",
                "observability.py",
            }, relative


LEMTRADA_MED = {
    "resourceType": "Medication",
    "id": "m1",
    "code": {"coding": [{"system": RXNORM, "code": "1594663"}], "text": "Lemtrada"},
}
NAMED_CASES = [
    pytest.param(
        {"medicationCodeableConcept": LEMTRADA_MED["code"]},
        (),
        "Lemtrada",
        None,
        id="an inline concept is read as it is",
    ),
    pytest.param(
        {"medicationReference": {"reference": "#m1"}, "contained": [LEMTRADA_MED]},
        (),
        "Lemtrada",
        CONTAINED,
        id="a contained Medication is found by its local id",
    ),
    pytest.param(
        {"medicationReference": {"reference": "Medication/m1", "display": "ALEMTUZUMAB"}},
        ([], [LEMTRADA_MED]),
        "ALEMTUZUMAB | Lemtrada",
        1,
        id="a referenced Medication is found in the first pool holding it",
    ),
    pytest.param(
        {"medicationReference": {"reference": "Medication/m1", "display": "ALEMTUZUMAB"}},
        ([],),
        "ALEMTUZUMAB",
        None,
        id="a reference resolved nowhere keeps only its display",
    ),
]


@pytest.mark.parametrize("holder,pools,words,found_in", NAMED_CASES)
def test_one_resolver_names_the_medication_of_orders_history_and_drafts(
    holder: dict[str, Any], pools: tuple[Any, ...], words: str, found_in: int | None
) -> None:
    """Orders under review, medication history and other drafts share one resolver."""
    named = name_medication(holder, pools)
    assert (named.words, named.found_in) == (words, found_in)
    assert bool(named.codes) is (found_in is not None or "medicationCodeableConcept" in holder)


def test_a_finding_under_another_topic_is_reported_unknown_not_passed_on() -> None:
    """The evaluator asserts each finding carries its rule's topic: a rule answering for another
    topic gives an 'unknown' warning under its own topic instead of a card under the wrong one."""
    import dataclasses

    from cds_service.domain.evaluate import _guarded
    from cds_service.domain.findings import Finding, Severity, Status
    from cds_service.domain.rules import RULES_BY_TOPIC

    rule = dataclasses.replace(
        RULES_BY_TOPIC["thyroid-disorder"],
        check=lambda record, order, policy: Finding("malignancy", Status.MET, Severity.INFO, "ok"),
    )
    from cds_service.domain.policy import load_policy

    finding = _guarded(rule, None, None, load_policy())  # type: ignore[arg-type]
    assert (finding.topic, finding.status, finding.severity) == (
        "thyroid-disorder",
        Status.UNKNOWN,
        Severity.WARNING,
    )


def test_every_suggested_lab_test_is_read_back_when_resulted() -> None:
    """Each lab test the service may suggest (terminology/orderables.json) is in a value set a
    check reads, so its result counts once the test is done instead of being asked for again."""
    import json
    from pathlib import Path

    from cds_service.domain.rules import RULES
    from cds_service.domain.terminology import value_set

    doc = json.loads(
        (
            Path(__file__).resolve().parent.parent
            / "cds_service"
            / "terminology"
            / "orderables.json"
        ).read_text(encoding="utf-8")
    )
    read = [value_set(vs) for rule in RULES for vs in rule.value_sets]
    not_read = [
        entry["key"]
        for entry in doc["labTests"]
        if not any((entry["coding"]["system"], entry["coding"]["code"]) in vs.codes for vs in read)
    ]
    assert not_read == []
