"""The result grammar (cds_service/domain/result_grammar.py) on results written the way labs
send them: each row a clinical sentence with the reading a clinician expects, positives beside
their controls. Panels (QuantiFERON, T-SPOT) are read through rules/labs.lab_results, as the
checks read them.
"""

from __future__ import annotations

import ast
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.cards import EVIDENCE, wording_parts
from cds_service.domain import result_grammar
from cds_service.domain.fhirdata import LOINC, SNOMED, V3_INTERPRETATION
from cds_service.domain.record import PatientRecord
from cds_service.domain.result_grammar import (
    READ_HOWS,
    TSPOT_ANTIGEN,
    TSPOT_MITOGEN,
    TSPOT_NIL,
    Component,
    Kind,
    Meaning,
    read_components,
    read_result,
    read_text,
    readable_unit,
)
from cds_service.domain.rules.labs import lab_results
from cds_service.domain.terminology import value_set
from cds_service.services import OBSERVATION_VALUE_SETS, prefetch_templates

POS, NEG, IND = Meaning.POSITIVE, Meaning.NEGATIVE, Meaning.INDETERMINATE
T0 = date(2026, 12, 7)
TB = value_set("tb-screening-loinc")


def coded(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def flag(code: str) -> list[dict[str, Any]]:
    return [coded(V3_INTERPRETATION, code)]


def qty(value: float, unit: str | None = None, comparator: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if unit is not None:
        out["unit"] = unit
    if comparator is not None:
        out["comparator"] = comparator
    return out


def row(
    sentence: str, observation: dict[str, Any], meaning: Meaning, kind: Kind = Kind.QUALITATIVE
):  # type: ignore[no-untyped-def]
    return pytest.param(observation, kind, meaning, id=sentence)


VZV_RANGES = [
    {"high": {"value": 0.89}, "text": "Negative: 0.89 index or less"},
    {"low": {"value": 0.9}, "high": {"value": 1.09}, "text": "Equivocal"},
    {"low": {"value": 1.1}, "text": "Positive: 1.10 index or more"},
]

ROWS = [
    # 1. The lab's interpretation, codes and displays.
    row("interpretation POS with no value is positive", {"interpretation": flag("POS")}, POS),
    row("interpretation RR (reactive) is positive", {"interpretation": flag("RR")}, POS),
    row("interpretation WR (weakly reactive) is positive", {"interpretation": flag("WR")}, POS),
    row("interpretation NR is negative", {"interpretation": flag("NR")}, NEG),
    row("interpretation ND is negative", {"interpretation": flag("ND")}, NEG),
    row("interpretation IND is indeterminate", {"interpretation": flag("IND")}, IND),
    row("interpretation E (equivocal) is indeterminate", {"interpretation": flag("E")}, IND),
    row(
        "the lab's NR wins over a text that says reactive",
        {"interpretation": flag("NR"), "valueString": "Reactive"},
        NEG,
    ),
    row(
        "the lab's POS wins over a coded negative answer",
        {"interpretation": flag("POS"), "valueCodeableConcept": coded(SNOMED, "260385009")},
        POS,
    ),
    row(
        "an interpretation only displayed as 'Reactive' (local code system) is positive",
        {"interpretation": [coded("urn:local:flags", "R1", "Reactive")]},
        POS,
    ),
    row(
        "an interpretation only displayed as 'Non-reactive' is negative",
        {"interpretation": [{"text": "Non-reactive"}]},
        NEG,
    ),
    row("a bare H flag says nothing by itself", {"interpretation": flag("H")}, IND),
    row("a bare N flag is not a negative by itself", {"interpretation": flag("N")}, IND),
    row("R means resistant, never reactive", {"interpretation": flag("R")}, IND),
    # 2. Coded answers: SNOMED CT qualifier values and LOINC answers.
    row(
        "SNOMED CT 11214006 Reactive is positive",
        {"valueCodeableConcept": coded(SNOMED, "11214006")},
        POS,
    ),
    row(
        "control: SNOMED CT 131194007 Non-reactive is negative",
        {"valueCodeableConcept": coded(SNOMED, "131194007")},
        NEG,
    ),
    row(
        "SNOMED CT 720735008 Presumptive positive is positive",
        {"valueCodeableConcept": coded(SNOMED, "720735008")},
        POS,
    ),
    row(
        "SNOMED CT 260373001 Detected is positive",
        {"valueCodeableConcept": coded(SNOMED, "260373001")},
        POS,
    ),
    row(
        "control: SNOMED CT 260415000 Not detected is negative",
        {"valueCodeableConcept": coded(SNOMED, "260415000")},
        NEG,
    ),
    row(
        "SNOMED CT 10828004 Positive is positive",
        {"valueCodeableConcept": coded(SNOMED, "10828004")},
        POS,
    ),
    row(
        "control: SNOMED CT 260385009 Negative is negative",
        {"valueCodeableConcept": coded(SNOMED, "260385009")},
        NEG,
    ),
    row(
        "SNOMED CT 419984006 Inconclusive is indeterminate",
        {"valueCodeableConcept": coded(SNOMED, "419984006")},
        IND,
    ),
    row(
        "SNOMED CT 42425007 Equivocal is indeterminate",
        {"valueCodeableConcept": coded(SNOMED, "42425007")},
        IND,
    ),
    row(
        "LOINC answer LA11882-0 Detected is positive",
        {"valueCodeableConcept": coded(LOINC, "LA11882-0")},
        POS,
    ),
    row(
        "control: LOINC answer LA11883-8 Not detected is negative",
        {"valueCodeableConcept": coded(LOINC, "LA11883-8")},
        NEG,
    ),
    row(
        "LOINC answer LA6576-8 Positive is positive",
        {"valueCodeableConcept": coded(LOINC, "LA6576-8")},
        POS,
    ),
    row(
        "control: LOINC answer LA6577-6 Negative is negative",
        {"valueCodeableConcept": coded(LOINC, "LA6577-6")},
        NEG,
    ),
    row(
        "an uncoded answer whose text says 'Not reactive' is negative",
        {"valueCodeableConcept": {"text": "Not reactive"}},
        NEG,
    ),
    # 4. Text: negation scoped to its phrase, read per analyte.
    row("text 'Reactive' is positive", {"valueString": "Reactive"}, POS),
    row(
        "control: text 'Not reactive' is negative, never positive",
        {"valueString": "Not reactive"},
        NEG,
    ),
    row("control: text 'Nonreactive' is negative", {"valueString": "Nonreactive"}, NEG),
    row(
        "text 'HIV-1 Ab positive, HIV-2 Ab negative' is positive (never negative when a part is)",
        {"valueString": "HIV-1 Ab positive, HIV-2 Ab negative"},
        POS,
    ),
    row(
        "control: text 'HIV-1 Ab negative, HIV-2 Ab negative' is negative",
        {"valueString": "HIV-1 Ab negative, HIV-2 Ab negative"},
        NEG,
    ),
    row(
        "text 'TB1 antigen negative and TB2 antigen positive' is positive",
        {"valueString": "TB1 antigen negative and TB2 antigen positive"},
        POS,
    ),
    row(
        "a contradictory text about one analyte is indeterminate",
        {"valueString": "HCV Ab reactive; HCV Ab nonreactive"},
        IND,
    ),
    row("text 'No HCV RNA detected' is negative", {"valueString": "No HCV RNA detected"}, NEG),
    row(
        "text 'Equivocal, repeat in 2 weeks' is indeterminate",
        {"valueString": "Equivocal, repeat in 2 weeks"},
        IND,
    ),
    row("text 'not negative' is no all-clear", {"valueString": "not negative"}, IND),
    row("a text with no answer is indeterminate", {"valueString": "See comment"}, IND),
    row(
        "a kit's 'positive control' is not an answer: the patient's negative stands",
        {"valueString": "Positive control valid; patient result negative"},
        NEG,
    ),
    # 3. Quantities: hCG against its cut-offs.
    row(
        "quantitative hCG 3 mIU/mL is negative", {"valueQuantity": qty(3, "mIU/mL")}, NEG, Kind.HCG
    ),
    row(
        "quantitative hCG <2 mIU/mL is negative",
        {"valueQuantity": qty(2, "mIU/mL", "<")},
        NEG,
        Kind.HCG,
    ),
    row(
        "quantitative hCG 12 mIU/mL flagged H is equivocal (repeat), not positive",
        {"valueQuantity": qty(12, "mIU/mL"), "interpretation": flag("H")},
        IND,
        Kind.HCG,
    ),
    row(
        "quantitative hCG 25 mIU/mL is positive",
        {"valueQuantity": qty(25, "mIU/mL")},
        POS,
        Kind.HCG,
    ),
    row(
        "quantitative hCG 1,200 IU/L (UCUM [IU]/L) is positive",
        {"valueQuantity": {"value": 1200, "code": "[IU]/L"}},
        POS,
        Kind.HCG,
    ),
    row(
        "quantitative hCG 0.03 IU/mL (30 mIU/mL) is positive",
        {"valueQuantity": qty(0.03, "IU/mL")},
        POS,
        Kind.HCG,
    ),
    row("quantitative hCG without a unit is unreadable", {"valueQuantity": qty(30)}, IND, Kind.HCG),
    row(
        "qualitative hCG coded Negative is negative",
        {"valueCodeableConcept": coded(SNOMED, "260385009")},
        NEG,
        Kind.HCG,
    ),
    # Viral load below the limit of quantification.
    row(
        "HCV RNA <15 IU/mL with nothing else is detected, not quantified",
        {"valueQuantity": qty(15, "IU/mL", "<")},
        POS,
        Kind.NUCLEIC_ACID,
    ),
    row(
        "control: HCV RNA <15 IU/mL with interpretation ND is not detected",
        {"valueQuantity": qty(15, "IU/mL", "<"), "interpretation": flag("ND")},
        NEG,
        Kind.NUCLEIC_ACID,
    ),
    row(
        "control: HCV RNA <15 IU/mL with a note 'HCV RNA not detected' is not detected",
        {"valueQuantity": qty(15, "IU/mL", "<"), "note": [{"text": "HCV RNA not detected"}]},
        NEG,
        Kind.NUCLEIC_ACID,
    ),
    row(
        "HCV RNA <15 IU/mL with a note 'detected below the limit of quantification' is detected",
        {
            "valueQuantity": qty(15, "IU/mL", "<"),
            "note": [{"text": "HCV RNA detected below the limit of quantification"}],
        },
        POS,
        Kind.NUCLEIC_ACID,
    ),
    row(
        "HIV-1 RNA 0 copies/mL is not detected",
        {"valueQuantity": qty(0, "copies/mL")},
        NEG,
        Kind.NUCLEIC_ACID,
    ),
    row(
        "HCV RNA 1.18 log10 IU/mL is detected",
        {"valueQuantity": qty(1.18, "log10 IU/mL")},
        POS,
        Kind.NUCLEIC_ACID,
    ),
    row(
        "HIV-1 RNA 15,000 copies/mL is detected",
        {"valueQuantity": qty(15000, "copies/mL")},
        POS,
        Kind.NUCLEIC_ACID,
    ),
    row(
        "HIV-1 RNA text 'Not detected' is negative",
        {"valueString": "Not detected"},
        NEG,
        Kind.NUCLEIC_ACID,
    ),
    # A qualitative test reported as a number, against its range or the lab's flag.
    row(
        "VZV IgG 1.3 index against the lab's answer ranges is positive",
        {"valueQuantity": {"value": 1.3, "code": "{index}"}, "referenceRange": VZV_RANGES},
        POS,
    ),
    row(
        "control: VZV IgG 0.5 index against the lab's answer ranges is negative",
        {"valueQuantity": {"value": 0.5, "code": "{index}"}, "referenceRange": VZV_RANGES},
        NEG,
    ),
    row(
        "VZV IgG 1.0 index in the equivocal range is indeterminate",
        {"valueQuantity": {"value": 1.0, "code": "{index}"}, "referenceRange": VZV_RANGES},
        IND,
    ),
    row(
        "HIV Ag/Ab 5.6 S/CO above the lab's range (<= 0.99) is positive",
        {"valueQuantity": qty(5.6, "S/CO"), "referenceRange": [{"high": {"value": 0.99}}]},
        POS,
    ),
    row(
        "control: HIV Ag/Ab 0.2 S/CO within the lab's range is negative",
        {"valueQuantity": qty(0.2, "S/CO"), "referenceRange": [{"high": {"value": 0.99}}]},
        NEG,
    ),
    row(
        "an index without a range but flagged N by the lab is negative",
        {"valueQuantity": qty(0.3, "index"), "interpretation": flag("N")},
        NEG,
    ),
    row("a number without a unit says nothing", {"valueQuantity": qty(0.3)}, IND),
    row(
        "an index against a range with only a lower end (perhaps the immune range) is not guessed",
        {"valueQuantity": qty(1.3, "index"), "referenceRange": [{"low": {"value": 1.1}}]},
        IND,
    ),
]


@pytest.mark.parametrize(("observation", "kind", "meaning"), ROWS)
def test_a_result_reads_as_a_clinician_would(
    observation: dict[str, Any], kind: Kind, meaning: Meaning
) -> None:
    """Interpretation, then coded answer, then quantity, then text."""
    reading = read_result({"resourceType": "Observation", "status": "final", **observation}, kind)
    assert reading.meaning is meaning
    assert reading.how in READ_HOWS


def tst(mm: float, unit: str | None = "mm") -> dict[str, Any]:
    quantity = qty(mm, unit) if unit else qty(mm)
    return {"code": coded(LOINC, "1648-5"), "valueQuantity": quantity}


@pytest.mark.parametrize(
    ("observation", "meaning"),
    [
        pytest.param(tst(7), POS, id="a 7 mm skin test is positive at the local 5 mm cut-off"),
        pytest.param(tst(3), NEG, id="control: a 3 mm skin test is negative"),
        pytest.param(tst(0.6, "cm"), POS, id="a 0.6 cm skin test is 6 mm: positive"),
        pytest.param(tst(8, None), IND, id="a skin test without a unit is unreadable"),
    ],
)
def test_a_tuberculin_skin_test_is_read_in_mm(
    observation: dict[str, Any], meaning: Meaning
) -> None:
    assert read_result(observation, Kind.QUALITATIVE, TB).meaning is meaning


# -- Panels through lab_results, as the TB check reads them ------------------------------------


def tb_obs(oid: str, code: str, label: str, day: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": LOINC, "code": code}], "text": label},
        "effectiveDateTime": day,
        **value,
    }


def qft(day: str, nil: float, tb1: float, tb2: float, mitogen: float) -> list[dict[str, Any]]:
    iu = "IU/mL"
    return [
        tb_obs("nil", "71776-9", "QuantiFERON Nil", day, valueQuantity=qty(nil, iu)),
        tb_obs("tb1", "46217-6", "QuantiFERON TB1 minus Nil", day, valueQuantity=qty(tb1, iu)),
        tb_obs("tb2", "64084-7", "QuantiFERON TB2 minus Nil", day, valueQuantity=qty(tb2, iu)),
        tb_obs(
            "mit", "71774-4", "QuantiFERON Mitogen minus Nil", day, valueQuantity=qty(mitogen, iu)
        ),
    ]


OVERALL_NEGATIVE = tb_obs(
    "qft",
    "71773-6",
    "QuantiFERON-TB Gold Plus",
    "2026-11-01",
    valueCodeableConcept=coded(SNOMED, "260385009"),
)


@pytest.mark.parametrize(
    ("resources", "meaning", "how"),
    [
        pytest.param(
            [OVERALL_NEGATIVE, *qft("2026-11-01", 0.1, 0.02, 0.05, 9.5)],
            NEG,
            "coded-value",
            id="a negative QuantiFERON with numeric tubes stays negative: tubes never outrank it",
        ),
        pytest.param(
            [OVERALL_NEGATIVE, *qft("2026-11-01", 9.0, 0.0, 0.0, 0.1)],
            NEG,
            "coded-value",
            id="even odd components do not turn the lab's negative overall result indeterminate",
        ),
        pytest.param(
            qft("2026-11-01", 0.1, 0.02, 0.05, 9.5),
            NEG,
            "qft-rule",
            id="components only, antigen tubes low, mitogen working: negative by the insert rule",
        ),
        pytest.param(
            qft("2026-11-01", 0.1, 0.02, 0.9, 9.5),
            POS,
            "qft-rule",
            id="components only, TB2 minus nil 0.9 IU/mL (>= 0.35 and >= 25% of nil): positive",
        ),
        pytest.param(
            qft("2026-11-01", 2.0, 0.4, 0.3, 9.5),
            NEG,
            "qft-rule",
            id="control: TB1 minus nil 0.4 IU/mL but under 25% of a 2.0 nil: negative",
        ),
        pytest.param(
            qft("2026-11-01", 8.5, 0.1, 0.1, 9.5),
            IND,
            "qft-high-nil",
            id="components only, nil above 8.0 IU/mL: indeterminate",
        ),
        pytest.param(
            qft("2026-11-01", 0.1, 0.02, 0.05, 0.3),
            IND,
            "qft-low-mitogen",
            id="components only, failed mitogen with low antigen tubes: indeterminate",
        ),
        pytest.param(
            qft("2026-11-01", 0.1, 0.02, 0.05, 9.5)[1:3],
            IND,
            "panel-incomplete",
            id="antigen tubes without the nil: indeterminate with the values",
        ),
        pytest.param(
            [
                tb_obs(
                    "a",
                    "74278-3",
                    "T-SPOT Panel A (ESAT-6)",
                    "2026-11-01",
                    valueQuantity={"value": 12, "code": "{spots}"},
                ),
                tb_obs(
                    "b",
                    "74277-5",
                    "T-SPOT Panel B (CFP10)",
                    "2026-11-01",
                    valueQuantity={"value": 2, "code": "{spots}"},
                ),
            ],
            IND,
            "panel-incomplete",
            id="T-SPOT spot counts without the nil control: indeterminate with the values",
        ),
    ],
)
def test_panel_components_never_outrank_the_overall_result(
    resources: list[dict[str, Any]], meaning: Meaning, how: str
) -> None:
    record = PatientRecord.build("p", resources)
    results = lab_results(record, "tb-screening-loinc", T0, 365)
    latest = results.latest
    assert latest is not None
    assert (latest.meaning, latest.read_from) == (meaning, how)
    assert len(results.current) == 1, "one reading per day, not one per tube"


def test_the_card_shows_the_value_in_readable_units_and_keeps_codes_in_the_facts() -> None:
    """The evidence line says what was read in words and units; raw codes ride in the facts."""
    hcg = {
        "resourceType": "Observation",
        "id": "hcg",
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": LOINC, "code": "21198-7"}]},
        "effectiveDateTime": "2026-12-01",
        "valueQuantity": {"value": 3, "system": "http://unitsofmeasure.org", "code": "m[IU]/mL"},
    }
    record = PatientRecord.build("p", [hcg])
    found = lab_results(record, "pregnancy-test-loinc", T0, None).latest
    assert found is not None
    (part,) = found.describe()
    assert part.facts["value"] == "3 mIU/mL"
    assert part.facts["meaning"] == "negative"
    assert "LOINC 21198-7" in str(part.facts["codes"])
    line = wording_parts()[EVIDENCE][part.kind]
    assert "{codes}" not in line, "raw codes stay out of the sentence"


@pytest.mark.parametrize(
    ("unit", "readable"),
    [
        pytest.param({"code": "{index}"}, "index", id="UCUM {index} reads index"),
        pytest.param({"code": "[IU]/L"}, "IU/L", id="UCUM [IU]/L reads IU/L"),
        pytest.param({"code": "m[IU]/mL"}, "mIU/mL", id="UCUM m[IU]/mL reads mIU/mL"),
        pytest.param(
            {"unit": "S/CO", "code": "{s_co_ratio}"}, "S/CO", id="the lab's own unit text wins"
        ),
    ],
)
def test_units_are_shown_without_ucum_braces(unit: dict[str, str], readable: str) -> None:
    assert readable_unit(unit) == readable


def test_every_way_of_reading_has_an_evidence_line() -> None:
    lines = wording_parts()[EVIDENCE]
    assert {f"read-{how}" for how in READ_HOWS} <= set(lines)


# -- Properties --------------------------------------------------------------------------------

ANALYTES = ["HIV-1 Ab", "HIV-2 Ab", "HIV-1 p24 Ag", "TB1 antigen", "TB2 antigen", "HBsAg", "HCV Ab"]
ANSWERS = [
    "positive",
    "negative",
    "reactive",
    "nonreactive",
    "detected",
    "not detected",
    "equivocal",
]
POSITIVE_ANSWERS = ["positive", "reactive", "detected", "weakly reactive"]
SEPARATORS = [", ", "; ", ". ", " and ", " but "]


def _key(analyte: str) -> str:
    return read_text(f"{analyte} positive").by_analyte.popitem()[0]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ANALYTES),
    st.sampled_from(ANSWERS),
    st.sampled_from(ANALYTES),
    st.sampled_from(ANSWERS),
    st.sampled_from(SEPARATORS),
    st.booleans(),
)
def test_an_unrelated_phrase_about_another_analyte_does_not_change_a_phrase(
    analyte: str, answer: str, other: str, other_answer: str, separator: str, before: bool
) -> None:
    """A phrase's reading (for its analyte) is the same alone and beside another analyte's."""
    if _key(analyte) == _key(other):
        return
    phrase, unrelated = f"{analyte} {answer}", f"{other} {other_answer}"
    text = unrelated + separator + phrase if before else phrase + separator + unrelated
    assert read_text(text).by_analyte[_key(analyte)] == read_text(phrase).by_analyte[_key(analyte)]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ANALYTES),
    st.sampled_from(POSITIVE_ANSWERS),
    st.sampled_from(["not ", "no ", "Not "]),
    st.booleans(),
)
def test_negating_a_positive_phrase_never_gives_positive(
    analyte: str, answer: str, negation: str, negation_first: bool
) -> None:
    """'not reactive', 'No HIV-1 Ab detected': a negated positive is never read positive."""
    assert read_text(f"{analyte} {answer}").meaning is POS
    text = f"{negation}{analyte} {answer}" if negation_first else f"{analyte} {negation}{answer}"
    assert read_text(text).meaning is not POS


# -- What is asked for ----------------------------------------------------------------------------

SCREENING_CODES = [
    pytest.param("hiv-rna-loinc", "25835-0", id="HIV-1 RNA qualitative 25835-0"),
    pytest.param("hiv-screening-loinc", "56888-1", id="HIV-1/2 Ag/Ab 4th generation 56888-1"),
    pytest.param("hiv-screening-loinc", "75622-1", id="HIV 1 and 2 tests panel 75622-1"),
    pytest.param("hiv-screening-loinc", "89365-1", id="HIV 1 and 2 Ab rapid panel 89365-1"),
    pytest.param("hcv-rna-loinc", "11259-9", id="HCV RNA presence 11259-9"),
    pytest.param("hcv-rna-loinc", "38180-6", id="HCV RNA log10 38180-6"),
    pytest.param("tb-screening-loinc", "71773-6", id="IGRA interpretation 71773-6"),
    pytest.param("tb-screening-loinc", "71776-9", id="QuantiFERON nil 71776-9 (component)"),
    pytest.param("tb-screening-loinc", "71774-4", id="QuantiFERON mitogen minus nil 71774-4"),
    pytest.param("tb-screening-loinc", "64084-7", id="QuantiFERON TB antigen minus nil 64084-7"),
    pytest.param("hbv-surface-antigen-loinc", "5196-1", id="HBsAg 5196-1"),
    pytest.param("hbv-core-antibody-loinc", "16933-4", id="anti-HBc total 16933-4"),
]


@pytest.mark.parametrize(("vs_id", "code"), SCREENING_CODES)
def test_the_screening_codes_labs_send_are_kept_and_fetched(vs_id: str, code: str) -> None:
    """The code is in the check's value set, the value set is one the prefetch serves, and the
    laboratory prefetch asks for every lab result (no code list), so the code arrives; only
    tests a clinic may file outside the laboratory are asked for by code."""
    assert (LOINC, code) in value_set(vs_id)
    assert vs_id in OBSERVATION_VALUE_SETS
    observations = prefetch_templates()["observations"]
    assert "category=laboratory" in observations and "code=" not in observations


def test_45323_3_is_never_read_as_a_tb_result() -> None:
    """Sources disagree whether 45323-3 is a QuantiFERON result or its mitogen tube."""
    assert (LOINC, "45323-3") not in value_set("tb-screening-loinc")


def test_a_skin_test_read_in_clinic_is_asked_for_by_code() -> None:
    assert f"{LOINC}|1648-5" in prefetch_templates()["observationsByCode"]


# -- The manufacturers' rules, part by part ------------------------------------------------------


def spots(role: str, count: int, label: str) -> Component:
    return Component(role, count, f"{count} spots", label)


@pytest.mark.parametrize(
    ("nil", "panel_a", "panel_b", "mitogen", "meaning"),
    [
        pytest.param(1, 10, 2, 50, POS, id="T-SPOT panel A 10 minus nil 1 = 9 spots: positive"),
        pytest.param(0, 6, 3, 50, IND, id="T-SPOT 6 spots above nil: borderline, retest"),
        pytest.param(0, 3, 4, 50, NEG, id="control: T-SPOT 4 spots above nil: negative"),
        pytest.param(12, 25, 2, 50, IND, id="T-SPOT nil control above 10 spots: invalid"),
        pytest.param(0, 1, 2, 10, IND, id="T-SPOT positive control below 20 spots: invalid"),
    ],
)
def test_t_spot_counts_follow_the_package_insert(
    nil: int, panel_a: int, panel_b: int, mitogen: int, meaning: Meaning
) -> None:
    parts = [
        spots(TSPOT_NIL, nil, "Nil control"),
        spots(TSPOT_ANTIGEN, panel_a, "Panel A (ESAT-6)"),
        spots(TSPOT_ANTIGEN, panel_b, "Panel B (CFP10)"),
        spots(TSPOT_MITOGEN, mitogen, "Positive control"),
    ]
    reading = read_components(parts)
    assert reading.meaning is meaning
    assert "Panel A (ESAT-6)" in reading.value, "the card shows the values it read"


def qft_part(code: str, label: str, value: float) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": code}], "text": label},
        "valueQuantity": qty(value, "IU/mL"),
    }


QFT_PARTS = [
    qft_part("71776-9", "Nil", 0.1),
    qft_part("46217-6", "TB1 minus Nil", 0.6),
    qft_part("64084-7", "TB2 minus Nil", 0.1),
    qft_part("71774-4", "Mitogen minus Nil", 9.0),
]


@pytest.mark.parametrize(
    ("observation", "meaning", "how"),
    [
        pytest.param(
            {"code": coded(LOINC, "71773-6"), "component": QFT_PARTS},
            POS,
            "qft-rule",
            id="one QuantiFERON Observation with only its tubes as components: read by the rule",
        ),
        pytest.param(
            {
                "code": coded(LOINC, "71773-6"),
                "component": QFT_PARTS,
                "valueCodeableConcept": coded(SNOMED, "260385009"),
            },
            NEG,
            "coded-value",
            id="the same Observation with the lab's overall Negative: the overall result wins",
        ),
        pytest.param(
            {
                "code": coded(LOINC, "71773-6"),
                "component": [qft_part("46217-6", "TB1 minus Nil", 0.6)],
            },
            IND,
            "panel-incomplete",
            id="a lone antigen tube as a component: indeterminate with the value",
        ),
    ],
)
def test_a_panel_sent_as_observation_components(
    observation: dict[str, Any], meaning: Meaning, how: str
) -> None:
    reading = read_result(observation, Kind.QUALITATIVE, TB)
    assert (reading.meaning, reading.how) == (meaning, how)


def test_a_lab_filing_its_nil_tube_on_the_antigen_code_is_read_by_its_label() -> None:
    """One lab reports the nil tube on 46217-6: the label 'Nil' decides the role."""
    parts = [
        qft_part("46217-6", "QuantiFERON Nil", 0.1),
        qft_part("64084-7", "TB1 minus Nil", 0.05),
        qft_part("71774-4", "Mitogen minus Nil", 9.0),
    ]
    reading = read_result(
        {"code": coded(LOINC, "71773-6"), "component": parts}, Kind.QUALITATIVE, TB
    )
    assert (reading.meaning, reading.how) == (NEG, "qft-rule")


def test_every_way_the_grammar_reads_is_listed_in_read_hows() -> None:
    """Each Reading(meaning, how, ...) the module writes names a listed how (so it is worded)."""
    tree = ast.parse(Path(result_grammar.__file__).read_text(encoding="utf-8"))
    written = {
        call.args[1].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "Reading"
        and len(call.args) > 1
        and isinstance(call.args[1], ast.Constant)
    }
    assert written == set(READ_HOWS)
