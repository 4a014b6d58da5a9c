"""Baseline lab values as labs send them (issue 13, items 5 and 6).

Each row is a clinical sentence: a record with every baseline test present and normal, changed by
the results the row names, and what the pharmacist must see. Every positive has a control that must
stay silent. End-to-end rows are at the end of fhir_fixtures/scenarios.json.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.cards import worded
from cds_service.domain.findings import Finding, Severity, Status
from cds_service.domain.lab_values import readable_unit
from cds_service.domain.orders import AlemtuzumabOrder, OrderContext
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules import RULES_BY_TOPIC

T0 = date(2026, 12, 7)
DAY = "2026-11-27"  # 10 days before T0: inside the 30-day baseline window
EARLIER = "2026-06-01"
PID = "p1"
REF = {"reference": f"Patient/{PID}"}
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
SCT = "http://snomed.info/sct"


def _quantity(value: float | None, unit: str | None) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value}
    if unit is not None:
        quantity.update({"unit": readable_unit(unit), "system": UCUM, "code": unit})
    return quantity


def lab(
    loinc: str,
    value: float | None = None,
    unit: str | None = None,
    *,
    day: str = DAY,
    low: float | None = None,
    high: float | None = None,
    flag: str | None = None,
    text: str | None = None,
    note: str | None = None,
    rid: str | None = None,
    components: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An Observation as a lab sends it: a quantity with its UCUM unit, the lab's range and flag,
    or a written (dipstick) result."""
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid or f"obs-{loinc}-{day}-{value}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": REF,
        "effectiveDateTime": day,
    }
    if value is not None or unit is not None:
        observation["valueQuantity"] = _quantity(value, unit)
    if text is not None:
        observation["valueCodeableConcept"] = {"text": text}
    if low is not None or high is not None:
        bounds: dict[str, Any] = {}
        if low is not None:
            bounds["low"] = _quantity(low, unit)
        if high is not None:
            bounds["high"] = _quantity(high, unit)
        observation["referenceRange"] = [bounds]
    if flag is not None:
        observation["interpretation"] = [{"coding": [{"system": V3, "code": flag}]}]
    if note is not None:
        observation["note"] = [{"text": note}]
    if components is not None:
        observation["component"] = components
    return observation


def coded(loinc: str, snomed: str) -> dict[str, Any]:
    """A dipstick result sent only as a SNOMED CT qualifier code (no text, no display)."""
    observation = lab(loinc, rid=f"obs-{loinc}-{snomed}")
    observation["valueCodeableConcept"] = {"coding": [{"system": SCT, "code": snomed}]}
    return observation


def component(loinc: str, text: str) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "valueCodeableConcept": {"text": text},
    }


# Every baseline test present within the window, each normal by the lab's own range.
NORMAL = {
    "cbc": lab("57021-8", rid="cbc-panel"),
    "creatinine": lab("2160-0", 0.8, "mg/dL", low=0.6, high=1.2, rid="creatinine"),
    "urinalysis": lab(
        "24356-8",
        rid="urinalysis",
        components=[component("20454-5", "Negative"), component("5794-3", "Negative")],
    ),
    "upcr": lab("2890-2", 80, "mg/g", rid="upcr"),
    "tsh": lab("11579-0", 1.8, "m[IU]/L", low=0.4, high=4.0, rid="tsh"),
    "alt": lab("1742-6", 22, "U/L", low=7, high=56, rid="alt"),
    "ast": lab("1920-8", 20, "U/L", low=10, high=40, rid="ast"),
    "bilirubin": lab("1975-2", 0.6, "mg/dL", low=0.1, high=1.2, rid="bilirubin"),
}


def cbc_analytes(*leave_out: str, day: str = DAY) -> list[dict[str, Any]]:
    """A CBC with differential as US Core and Synthea send it: one Observation per analyte."""
    analytes = {
        "white cells": lab("6690-2", 6.4, "10*3/uL", low=4.5, high=11, day=day),
        "hemoglobin": lab("718-7", 13.6, "g/dL", low=12, high=16, day=day),
        "platelets": lab("777-3", 254, "10*3/uL", low=150, high=400, day=day),
        "neutrophils": lab("770-8", 58, "%", low=37, high=67, day=day),
        "lymphocytes": lab("736-9", 30, "%", low=20, high=45, day=day),
    }
    return [obs for name, obs in analytes.items() if name not in leave_out]


def run(topic: str, change: dict[str, Any | None], extra: list[dict[str, Any]]) -> Finding:
    """The check `topic` on the normal record with some tests replaced (None: removed) and some
    results added, worded as on a card."""
    tests = {**NORMAL, **change}
    resources = [r for r in tests.values() if r is not None] + extra
    patient = {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1986-11-28"}
    record = PatientRecord.build(PID, [patient, *resources])
    order = OrderContext(
        hook="order-select",
        order=AlemtuzumabOrder({"id": "o1"}, "test", ()),
        t0=T0,
        t0_source="test",
        draft_orders=(),
    )
    policy = load_policy()
    return worded(RULES_BY_TOPIC[topic].check(record, order, policy), policy)


def said(finding: Finding) -> str:
    """Everything the card says: headline, explanation, evidence lines and unreadable notes."""
    parts = [finding.headline, *finding.explanation, *(e.text for e in finding.evidence)]
    parts += [str(u) for u in finding.unreadable]
    return "\n".join(parts)


MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN
W, OK = Severity.WARNING, Severity.INFO
BASELINE = "baseline-labs"
THYROID = "thyroid-disorder"

# (sentence, topic, tests replaced or removed, results added, status, severity, phrases the card
# must say, phrases it must not say)
CASES = [
    (
        "platelets 45 x10^3/uL below the range 150-400 warn of immune thrombocytopenia",
        BASELINE,
        {},
        [lab("777-3", 45, "10*3/uL", low=150, high=400)],
        NOT_MET,
        W,
        ["platelets 45 x10^3/uL: ITP risk", "below the range 150-400 x10^3/uL", DAY],
        [],
    ),
    (
        "platelets 250 inside the range are met",
        BASELINE,
        {},
        [lab("777-3", 250, "10*3/uL", low=150, high=400)],
        MET,
        OK,
        [],
        ["ITP"],
    ),
    (
        "UPCR 500 mg/g is above 200 mg/g",
        BASELINE,
        {"upcr": lab("2890-2", 500, "mg/g")},
        [],
        NOT_MET,
        W,
        ["UPCR 500 mg/g", "above 200 mg/g", "evaluate for nephropathy"],
        [],
    ),
    (
        "UPCR 150 mg/g is met",
        BASELINE,
        {"upcr": lab("2890-2", 150, "mg/g")},
        [],
        MET,
        OK,
        [],
        ["UPCR"],
    ),
    (
        "UPCR 30 mg/mmol is 265 mg/g, above 200",
        BASELINE,
        {"upcr": lab("2890-2", 30, "mg/mmol")},
        [],
        NOT_MET,
        W,
        ["UPCR 30 mg/mmol", "(= 265 mg/g)"],
        [],
    ),
    (
        "UPCR 20 mg/mmol is 177 mg/g, met",
        BASELINE,
        {"upcr": lab("2890-2", 20, "mg/mmol")},
        [],
        MET,
        OK,
        [],
        ["UPCR"],
    ),
    (
        "UPCR 0.5 mg/mg is 500 mg/g, above 200",
        BASELINE,
        {"upcr": lab("2890-2", 0.5, "mg/mg")},
        [],
        NOT_MET,
        W,
        ["(= 500 mg/g)"],
        [],
    ),
    (
        "dipstick protein 2+ without a UPCR asks for one",
        BASELINE,
        {"upcr": None},
        [lab("20454-5", text="2+")],
        NOT_MET,
        W,
        ["dipstick protein 2+ without UPCR", "missing: urine protein/creatinine ratio"],
        [],
    ),
    (
        "dipstick protein 2+ with a normal UPCR is met: the ratio quantifies it",
        BASELINE,
        {},
        [lab("20454-5", text="2+")],
        MET,
        OK,
        [],
        ["dipstick protein 2+ without UPCR"],
    ),
    (
        "dipstick protein trace without a UPCR is only the missing ratio",
        BASELINE,
        {"upcr": None},
        [lab("20454-5", text="Trace")],
        UNKNOWN,
        W,
        ["urine protein/creatinine ratio"],
        ["dipstick protein"],
    ),
    (
        "Synthea's dipstick finding 'Urine protein test = +' without a UPCR reads as 1+",
        BASELINE,
        {"upcr": None},
        [lab("20454-5", text="Urine protein test = + (finding)")],
        NOT_MET,
        W,
        ["without UPCR"],
        [],
    ),
    (
        "creatinine 1.4 after 1.0 mg/dL rose 40%, inside the lab's range",
        BASELINE,
        {"creatinine": lab("2160-0", 1.4, "mg/dL", low=0.6, high=1.5)},
        [lab("2160-0", 1.0, "mg/dL", low=0.6, high=1.5, day=EARLIER)],
        NOT_MET,
        W,
        ["creatinine up 40%", "above 1 mg/dL on 2026-06-01", "more than 30%"],
        [],
    ),
    (
        "creatinine 1.3 after 1.0 mg/dL rose exactly 30%, not more than 30%: met",
        BASELINE,
        {"creatinine": lab("2160-0", 1.3, "mg/dL", low=0.6, high=1.5)},
        [lab("2160-0", 1.0, "mg/dL", low=0.6, high=1.5, day=EARLIER)],
        MET,
        OK,
        [],
        ["creatinine up"],
    ),
    (
        "creatinine 1.31 after 1.0 mg/dL rose 31%, just above 30%",
        BASELINE,
        {"creatinine": lab("2160-0", 1.31, "mg/dL", low=0.6, high=1.5)},
        [lab("2160-0", 1.0, "mg/dL", low=0.6, high=1.5, day=EARLIER)],
        NOT_MET,
        W,
        ["creatinine up 31%"],
        [],
    ),
    (
        "creatinine 1.2 after 1.0 mg/dL rose 20%: met",
        BASELINE,
        {"creatinine": lab("2160-0", 1.2, "mg/dL", low=0.6, high=1.5)},
        [lab("2160-0", 1.0, "mg/dL", low=0.6, high=1.5, day=EARLIER)],
        MET,
        OK,
        [],
        ["creatinine up"],
    ),
    (
        "creatinine 120 umol/L after 1.0 mg/dL rose 36% (converted by 88.4)",
        BASELINE,
        {"creatinine": lab("14682-9", 120, "umol/L", low=45, high=133)},
        [lab("2160-0", 1.0, "mg/dL", day=EARLIER)],
        NOT_MET,
        W,
        ["creatinine up 36%"],
        [],
    ),
    (
        "creatinine 1.4 mg/dL above the lab's range 0.6-1.2 is abnormal",
        BASELINE,
        {"creatinine": lab("2160-0", 1.4, "mg/dL", low=0.6, high=1.2)},
        [],
        NOT_MET,
        W,
        ["creatinine 1.4 mg/dL (high)", "range 0.6-1.2 mg/dL"],
        [],
    ),
    (
        "creatinine without a unit is unreadable, not normal",
        BASELINE,
        {"creatinine": lab("2160-0", 1.4, None)},
        [],
        MET,
        OK,
        ["unreadable, 1.4 has no unit", "Observation/obs-2160-0"],
        [],
    ),
    (
        "CBC as five analytes the same day is a CBC with differential",
        BASELINE,
        {"cbc": None},
        cbc_analytes(),
        MET,
        OK,
        ["CBC with differential: reported as analytes"],
        [],
    ),
    (
        "CBC as four analytes (no lymphocytes) is missing",
        BASELINE,
        {"cbc": None},
        cbc_analytes("lymphocytes"),
        UNKNOWN,
        W,
        ["missing within 30 days: CBC with differential", "no lymphocytes"],
        [],
    ),
    (
        "CBC analytes on two different days are not one CBC",
        BASELINE,
        {"cbc": None},
        cbc_analytes("lymphocytes") + [lab("736-9", 30, "%", day="2026-11-28")],
        UNKNOWN,
        W,
        ["CBC with differential"],
        [],
    ),
    (
        "dipstick blood 1+ with no explanation is hematuria to review",
        BASELINE,
        {},
        [lab("5794-3", text="1+")],
        NOT_MET,
        W,
        ["unexplained hematuria", "no explanation noted"],
        [],
    ),
    (
        "dipstick blood 1+ explained in the result's note is met",
        BASELINE,
        {},
        [lab("5794-3", text="1+", note="Menstruating at collection")],
        MET,
        OK,
        ["explained in the result's note: Menstruating at collection"],
        ["unexplained"],
    ),
    (
        "dipstick blood coded Positive (SNOMED 10828004) with no text is hematuria",
        BASELINE,
        {},
        [coded("5794-3", "10828004")],
        NOT_MET,
        W,
        ["unexplained hematuria"],
        [],
    ),
    (
        "dipstick blood coded Negative (SNOMED 260385009) is met",
        BASELINE,
        {},
        [coded("5794-3", "260385009")],
        MET,
        OK,
        [],
        ["hematuria"],
    ),
    (
        "a dipstick blood result that says nothing readable is unreadable, not negative",
        BASELINE,
        {},
        [lab("5794-3", text="see comment")],
        MET,
        OK,
        ["unreadable, no grade"],
        ["hematuria"],
    ),
    (
        "urine red cells 12 /HPF above the range 0-3 are hematuria",
        BASELINE,
        {},
        [lab("13945-1", 12, "/[HPF]", low=0, high=3)],
        NOT_MET,
        W,
        ["unexplained hematuria", "12 /HPF"],
        [],
    ),
    (
        "urine red cells 2 /HPF inside the range are met",
        BASELINE,
        {},
        [lab("13945-1", 2, "/[HPF]", low=0, high=3)],
        MET,
        OK,
        [],
        ["hematuria"],
    ),
    (
        "ALT 120 U/L flagged high by the lab is abnormal even without a range",
        BASELINE,
        {"alt": lab("1742-6", 120, "U/L", flag="H")},
        [],
        NOT_MET,
        W,
        ["ALT 120 U/L (high)"],
        [],
    ),
    (
        "ALT 30 U/L flagged normal is met",
        BASELINE,
        {"alt": lab("1742-6", 30, "U/L", flag="N")},
        [],
        MET,
        OK,
        [],
        ["ALT 30"],
    ),
    (
        "a range with low above high (as in a US Core example) judges nothing",
        BASELINE,
        {"alt": lab("1742-6", 300, "U/L", low=56, high=7)},
        [],
        MET,
        OK,
        ["low above high", "not judged"],
        [],
    ),
    (
        "TSH 11579-0 of 12 mIU/L above 0.4-4.0 is a thyroid warning",
        THYROID,
        {"tsh": lab("11579-0", 12, "m[IU]/L", low=0.4, high=4.0)},
        [],
        NOT_MET,
        W,
        ["TSH 12 mIU/L outside the lab's range", "range 0.4-4 mIU/L"],
        [],
    ),
    (
        "TSH 2.1 mIU/L inside the range keeps the thyroid check silent",
        THYROID,
        {"tsh": lab("11579-0", 2.1, "m[IU]/L", low=0.4, high=4.0)},
        [],
        MET,
        OK,
        [],
        ["TSH"],
    ),
    (
        "TSH without a unit is unreadable for the thyroid check, not normal",
        THYROID,
        {"tsh": lab("11579-0", 12, None)},
        [],
        MET,
        OK,
        ["unreadable, 12 without a unit"],
        [],
    ),
    (
        "TSH of 12 mIU/L is the thyroid check's, not a baseline-lab problem",
        BASELINE,
        {"tsh": lab("11579-0", 12, "m[IU]/L", low=0.4, high=4.0)},
        [],
        MET,
        OK,
        [],
        ["TSH 12"],
    ),
    (
        "VZV IgG index 5403-1 read positive by the lab counts as immunity",
        "vzv-immunity",
        {},
        [lab("5403-1", 2.5, "{index}", flag="POS")],
        MET,
        OK,
        ["antibody index: 2.5 index, read as positive"],
        [],
    ),
    (
        "VZV IgG index 5403-1 read negative by the lab is not immunity",
        "vzv-immunity",
        {},
        [lab("5403-1", 0.4, "{index}", flag="NEG")],
        NOT_MET,
        W,
        ["antibody index: 0.4 index, read as negative"],
        [],
    ),
]


@pytest.mark.parametrize(
    ("case", "topic", "change", "extra", "status", "severity", "says", "never"),
    CASES,
    ids=[row[0] for row in CASES],
)
def test_baseline_value(case, topic, change, extra, status, severity, says, never):
    """The check reaches the status and severity, and the card says (or never says) the
    phrases."""
    finding = run(topic, change, extra)
    text = said(finding)
    assert (finding.status, finding.severity) == (status, severity), text
    assert len(finding.headline) < 140, finding.headline
    for phrase in says:
        assert phrase in text, (phrase, text)
    for phrase in never:
        assert phrase not in text, (phrase, text)


@pytest.mark.parametrize(
    ("ucum", "readable"),
    [
        ("10*3/uL", "x10^3/uL"),
        ("m[IU]/L", "mIU/L"),
        ("mL/min/{1.73_m2}", "mL/min/1.73 m2"),
        ("mg/g{creat}", "mg/g"),
        ("{index}", "index"),
        ("/[HPF]", "/HPF"),
    ],
)
def test_units_read_without_ucum_braces_or_brackets(ucum, readable):
    """The card shows a unit as a clinician writes it."""
    assert readable_unit(ucum) == readable
