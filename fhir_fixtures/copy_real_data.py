#!/usr/bin/env python3
"""Copy the externally authored patients of the shared data folder into fhir_fixtures/real/.

Run once by hand (the copies are committed; the tests read only the copies):

    python fhir_fixtures/copy_real_data.py [/work/shared/data]

- Synthea R4 bundles (synthea-r4/): the 4 already in base/ are not copied again. The other 6 are
  copied as transaction Bundles keeping only the entries of the resource types the service's
  prefetch asks for (Patient, Condition, Observation, Immunization, MedicationStatement,
  MedicationRequest, MedicationAdministration, AllergyIntolerance, Medication); every kept entry
  is unchanged (same JSON value), Claims, ExplanationOfBenefits, Encounters, Procedures,
  DiagnosticReports, CarePlans, Goals, Organizations and Practitioners are dropped (written with
  2-space indentation).
- Synthea bulk NDJSON (synthea-bulk-10-patients/): the four files, byte for byte.
- US Core examples (us-core-examples/): the three Patients and the files of the types above,
  byte for byte (DiagnosticReport, MedicationDispense and Specimen are left out).

fhir_fixtures/SOURCES.md lists each copy's origin and SHA-256.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
REAL = HERE / "real"
KEPT_TYPES = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "Immunization",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "AllergyIntolerance",
        "Medication",
    }
)


def copy_synthea_r4(source: pathlib.Path) -> None:
    out = REAL / "synthea-r4"
    out.mkdir(parents=True, exist_ok=True)
    already = {path.name for path in (HERE / "base").glob("*.json")}
    for path in sorted((source / "synthea-r4").glob("*.json")):
        if path.name in already:
            continue
        bundle = json.loads(path.read_text(encoding="utf-8"))
        bundle["entry"] = [
            e for e in bundle["entry"] if e["resource"]["resourceType"] in KEPT_TYPES
        ]
        text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
        (out / path.name).write_text(text, encoding="utf-8")


def copy_bulk(source: pathlib.Path) -> None:
    out = REAL / "synthea-bulk-10-patients"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((source / "synthea-bulk-10-patients").glob("*.ndjson")):
        shutil.copyfile(path, out / path.name)


def copy_us_core(source: pathlib.Path) -> None:
    out = REAL / "us-core"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((source / "us-core-examples").glob("*.json")):
        if json.loads(path.read_text(encoding="utf-8"))["resourceType"] in KEPT_TYPES:
            shutil.copyfile(path, out / path.name)


def main(argv: list[str]) -> int:
    source = pathlib.Path(argv[1] if len(argv) > 1 else "/work/shared/data")
    copy_synthea_r4(source)
    copy_bulk(source)
    copy_us_core(source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
