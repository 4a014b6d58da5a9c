"""The worklist's fixture export (fhir_fixtures/bulk-export/) and the resources it is made of.

`python fhir_fixtures/bulk_export.py` rewrites fhir_fixtures/bulk-export/ from the Synthea bulk
export in ../shared/data/synthea-bulk-10-patients (ten of its patients, their Patient, Condition,
Immunization and MedicationRequest lines copied unchanged) plus written alemtuzumab histories and
monthly laboratory results (see fhir_fixtures/SOURCES.md). The benchmark (bench/bench.py, section
`monitor`) builds its large exports with the same functions.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA_BULK = ROOT.parent / "shared" / "data" / "synthea-bulk-10-patients"
OUT = ROOT / "fhir_fixtures" / "bulk-export"
TODAY = date(2026, 11, 15)
"""The day the fixture's expectations are written for (`--today 2026-11-15`)."""

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
LAB = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory",
                "display": "Laboratory",
            }
        ]
    }
]
LEMTRADA = ("1594663", "1.2 ML alemtuzumab 10 MG/ML Injection [Lemtrada]")
CAMPATH = ("828267", "1 ML alemtuzumab 30 MG/ML Injection [Campath]")
ACYCLOVIR = ("197311", "acyclovir 400 MG Oral Tablet")


def add_months(day: date, months: int) -> date:
    """The same day `months` calendar months later (the month's last day when it is shorter)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    for dom in range(day.day, 0, -1):
        try:
            return date(year, month, dom)
        except ValueError:
            continue
    raise ValueError(day)  # pragma: no cover


def concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def ranged(low: float, high: float, unit: str) -> list[dict[str, Any]]:
    return [{"low": quantity(low, unit), "high": quantity(high, unit)}]


def observation(
    oid: str, patient: str, code: tuple[str, str], day: date, **elements: Any
) -> dict[str, Any]:
    """A final laboratory Observation (value, referenceRange, component... as given)."""
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": LAB,
        "code": concept(LOINC, *code),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": f"{day.isoformat()}T09:30:00Z",
        **elements,
    }


def component(code: tuple[str, str], **elements: Any) -> dict[str, Any]:
    return {"code": concept(LOINC, *code), **elements}


NEGATIVE = concept(SNOMED, "260385009", "Negative")


def cbc(oid: str, patient: str, day: date, platelets: float = 254) -> dict[str, Any]:
    """CBC with automated differential; platelets (x10^9/L = 10*3/uL) with the lab's range."""
    return observation(
        oid,
        patient,
        ("57021-8", "CBC W Auto Differential panel - Blood"),
        day,
        component=[
            component(
                ("6690-2", "Leukocytes [#/volume] in Blood by Automated count"),
                valueQuantity=quantity(6.1, "10*3/uL"),
                referenceRange=ranged(4.0, 11.0, "10*3/uL"),
            ),
            component(
                ("718-7", "Hemoglobin [Mass/volume] in Blood"),
                valueQuantity=quantity(13.4, "g/dL"),
                referenceRange=ranged(12.0, 16.0, "g/dL"),
            ),
            component(
                ("777-3", "Platelets [#/volume] in Blood by Automated count"),
                valueQuantity=quantity(platelets, "10*3/uL"),
                referenceRange=ranged(150, 400, "10*3/uL"),
            ),
            component(
                ("731-0", "Lymphocytes [#/volume] in Blood by Automated count"),
                valueQuantity=quantity(0.9, "10*3/uL"),
                referenceRange=ranged(1.0, 4.8, "10*3/uL"),
            ),
            component(
                ("751-8", "Neutrophils [#/volume] in Blood by Automated count"),
                valueQuantity=quantity(3.6, "10*3/uL"),
                referenceRange=ranged(1.8, 7.7, "10*3/uL"),
            ),
        ],
    )


def creatinine(oid: str, patient: str, day: date, value: float = 0.8) -> dict[str, Any]:
    return observation(
        oid,
        patient,
        ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
        day,
        valueQuantity=quantity(value, "mg/dL"),
        referenceRange=ranged(0.5, 1.1, "mg/dL"),
    )


def urinalysis(oid: str, patient: str, day: date) -> dict[str, Any]:
    """Urinalysis with protein and blood by test strip and the sediment's red cell count."""
    return observation(
        oid,
        patient,
        ("24356-8", "Urinalysis complete panel - Urine"),
        day,
        component=[
            component(
                ("20454-5", "Protein [Presence] in Urine by Test strip"),
                valueCodeableConcept=NEGATIVE,
            ),
            component(
                ("5794-3", "Hemoglobin [Presence] in Urine by Test strip"),
                valueCodeableConcept=NEGATIVE,
            ),
            component(
                (
                    "13945-1",
                    "Erythrocytes [#/area] in Urine sediment by Microscopy high power field",
                ),
                valueQuantity=quantity(1, "/[HPF]"),
                referenceRange=ranged(0, 2, "/[HPF]"),
            ),
        ],
    )


def tsh(oid: str, patient: str, day: date, value: float = 1.9) -> dict[str, Any]:
    return observation(
        oid,
        patient,
        ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma"),
        day,
        valueQuantity=quantity(value, "m[IU]/L"),
        referenceRange=ranged(0.4, 4.0, "m[IU]/L"),
    )


def liver(oid: str, patient: str, day: date) -> list[dict[str, Any]]:
    return [
        observation(
            f"{oid}-alt",
            patient,
            ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
            day,
            valueQuantity=quantity(22, "U/L"),
            referenceRange=ranged(7, 35, "U/L"),
        ),
        observation(
            f"{oid}-ast",
            patient,
            ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
            day,
            valueQuantity=quantity(24, "U/L"),
            referenceRange=ranged(10, 40, "U/L"),
        ),
        observation(
            f"{oid}-bili",
            patient,
            ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma"),
            day,
            valueQuantity=quantity(0.6, "mg/dL"),
            referenceRange=ranged(0.1, 1.2, "mg/dL"),
        ),
    ]


def monthly_labs(
    patient: str, tag: str, first: date, last: date, platelets: dict[date, float] | None = None
) -> list[dict[str, Any]]:
    """The label's monitoring from `first` to `last`: CBC with differential, serum creatinine and
    urinalysis every month, TSH and liver tests every third month. `platelets` overrides the
    platelet count of given days."""
    out: list[dict[str, Any]] = []
    month = 0
    while (day := add_months(first, month)) <= last:
        key = f"{tag}-{day:%Y%m%d}"
        out.append(cbc(f"{key}-cbc", patient, day, (platelets or {}).get(day, 254)))
        out.append(creatinine(f"{key}-creat", patient, day))
        out.append(urinalysis(f"{key}-ua", patient, day))
        if month % 3 == 0:
            out.append(tsh(f"{key}-tsh", patient, day))
            out += liver(key, patient, day)
        month += 1
    return out


def background_labs(patient: str, tag: str, days: Iterable[date]) -> list[dict[str, Any]]:
    """Routine results of a patient never treated: a CBC and a creatinine on each day."""
    out: list[dict[str, Any]] = []
    for day in days:
        out.append(cbc(f"{tag}-{day:%Y%m%d}-cbc", patient, day))
        out.append(creatinine(f"{tag}-{day:%Y%m%d}-creat", patient, day))
    return out


def administrations(
    patient: str, tag: str, start: date, days: int, product: tuple[str, str] = LEMTRADA
) -> list[dict[str, Any]]:
    """One completed MedicationAdministration per infusion day of a course (12 mg IV)."""
    return [
        {
            "resourceType": "MedicationAdministration",
            "id": f"{tag}-{start + timedelta(days=n):%Y%m%d}",
            "status": "completed",
            "medicationCodeableConcept": concept(RXNORM, *product),
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": f"{start + timedelta(days=n):%Y-%m-%d}T10:00:00Z",
            "dosage": {
                "route": concept(SNOMED, "47625008", "Intravenous route"),
                "dose": quantity(12, "mg"),
            },
        }
        for n in range(days)
    ]


def medication(mid: str, code: tuple[str, str]) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": mid, "code": concept(RXNORM, *code)}


def requested(
    rid: str, patient: str, medication_id: str, start: date, days: int, status: str
) -> dict[str, Any]:
    """A MedicationRequest naming a Medication of the export by reference."""
    end = start + timedelta(days=days - 1)
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationReference": {"reference": f"Medication/{medication_id}"},
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": start.isoformat(),
        "dosageInstruction": [
            {"timing": {"repeat": {"boundsPeriod": {"start": str(start), "end": str(end)}}}}
        ],
    }


# -- the fixture -------------------------------------------------------------------------------

ON_TIME = "7bc002fa-dc52-17d6-1563-fd8901826f7d"
OVERDUE = "a4a401d1-a46a-eb4a-8a38-760d5d79d6ec"
ITP = "ca15b832-01e4-41dd-6a52-97bd3e5510cb"
ENDED = "8e1a0a7c-e308-444b-075a-3c2b1f60f881"
DECEASED = "cbc86e51-9eca-3855-76ec-c058f72c5761"
CAMPATH_ONLY = "6a4160eb-a793-2f86-2302-378626f46cce"
TWO_COURSES = "fb7c882a-f897-e7c5-67e0-825e7fd55d15"
NEVER_TREATED = (
    "63ee2253-bdd5-da55-2ad2-b4984d0ad700",
    "bb6a9034-2f23-2508-d29d-35efee156dc9",
    "3af3708d-41f1-cd80-f3dd-ec5ac76072bf",
)
PATIENTS = (ON_TIME, OVERDUE, ITP, ENDED, DECEASED, CAMPATH_ONLY, TWO_COURSES, *NEVER_TREATED)
DECEASED_ON = "2026-08-14"
"""Written into the copy of that Synthea patient (alive in the source)."""


def written() -> list[dict[str, Any]]:
    """The histories written for the fixture (the Synthea records have no alemtuzumab)."""
    out: list[dict[str, Any]] = []
    # On time: one course, every test every month up to this month.
    out += administrations(ON_TIME, "on-time-lemtrada", date(2025, 6, 2), 5)
    out += monthly_labs(ON_TIME, "on-time", date(2025, 5, 20), date(2026, 11, 2))
    # Overdue: monthly results stopped after June 2026.
    out += administrations(OVERDUE, "overdue-lemtrada", date(2025, 1, 6), 5)
    out += monthly_labs(OVERDUE, "overdue", date(2024, 12, 20), date(2026, 6, 2))
    # ITP: the newest platelet count (2026-10-20) 62 x10^9/L, below the ITP threshold of 100.
    out += administrations(ITP, "itp-lemtrada", date(2025, 9, 1), 5)
    out += monthly_labs(
        ITP, "itp", date(2025, 8, 20), date(2026, 10, 20), platelets={date(2026, 10, 20): 62}
    )
    # Ended: the last infusion more than 48 months ago.
    out += administrations(ENDED, "ended-lemtrada", date(2021, 3, 1), 5)
    out += monthly_labs(ENDED, "ended", date(2021, 2, 20), date(2022, 3, 1))
    # Deceased: in monitoring when they died (listed apart).
    out += administrations(DECEASED, "deceased-lemtrada", date(2025, 2, 3), 5)
    out += monthly_labs(DECEASED, "deceased", date(2025, 1, 20), date(2026, 7, 2))
    # Campath only (chronic lymphocytic leukaemia dosing): never Lemtrada monitoring.
    out += administrations(CAMPATH_ONLY, "campath", date(2025, 4, 7), 3, CAMPATH)
    # Two courses: the second (by MedicationRequest naming a Medication of the export) a year
    # after the first; monitoring counts from the last infusion of the second.
    out += administrations(TWO_COURSES, "course-1-lemtrada", date(2024, 3, 4), 5)
    out.append(medication("lemtrada-12mg", LEMTRADA))
    out.append(medication("acyclovir-400mg", ACYCLOVIR))
    out.append(
        requested(
            "course-2-lemtrada", TWO_COURSES, "lemtrada-12mg", date(2025, 3, 10), 3, "completed"
        )
    )
    out.append(
        requested(
            "course-2-acyclovir", TWO_COURSES, "acyclovir-400mg", date(2025, 3, 10), 60, "completed"
        )
    )
    out += monthly_labs(TWO_COURSES, "two-courses", date(2024, 2, 20), date(2026, 11, 4))
    # Never treated: routine results only.
    out += background_labs(NEVER_TREATED[0], "never", [date(2025, 5, 5), date(2026, 5, 4)])
    return out


def synthea_lines(patients: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, resource) of the chosen patients, file by file as the Synthea export holds them."""
    wanted = set(patients)
    for path in sorted(SYNTHEA_BULK.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            ref = resource.get("subject") or resource.get("patient") or {}
            owner = resource["id"] if resource["resourceType"] == "Patient" else None
            owner = owner or str(ref.get("reference", "")).rsplit("/", 1)[-1]
            if owner in wanted:
                if resource["resourceType"] == "Patient" and owner == DECEASED:
                    resource["deceasedDateTime"] = DECEASED_ON
                yield resource["resourceType"], resource


def write_export(folder: Path, resources: Iterable[tuple[str, dict[str, Any]]], split: int) -> None:
    """NDJSON files by type, at most `split` lines each (Observation.000, .001...)."""
    by_type: dict[str, list[bytes]] = defaultdict(list)
    for rtype, resource in resources:
        by_type[rtype].append(orjson.dumps(resource))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.ndjson"):
        stale.unlink()
    for rtype, lines in sorted(by_type.items()):
        for n in range(0, len(lines), split):
            (folder / f"{rtype}.{n // split:03d}.ndjson").write_bytes(
                b"\n".join(lines[n : n + split]) + b"\n"
            )


def main() -> int:
    resources = [
        *synthea_lines(PATIENTS),
        *((r["resourceType"], r) for r in written()),
    ]
    write_export(OUT, resources, split=400)
    print(f"wrote {OUT.relative_to(ROOT)}/: {len(resources)} resources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
