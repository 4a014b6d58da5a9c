"""Reading a FHIR Bulk Data export (NDJSON, one resource type per file) in two streaming passes.

`$export` writes files such as `Patient.000.ndjson` and `Observation.001.ndjson`: one resource
per line, any number of files per type. The worklist needs the records of the few patients
treated with alemtuzumab out of an export of any size, so nothing is held for anyone else:

- pass 1 reads the Medication files, then the medication-use files (MedicationAdministration,
  MedicationStatement, MedicationRequest), and names every patient with an alemtuzumab record
  (Lemtrada or Campath, any status: the monitoring checks decide what counts);
- pass 2 reads every file of a type the patient record keeps and holds the raw lines of those
  patients only (and the Medications their records point to), to be parsed one patient at a time.

Memory therefore grows with the treated patients' records; time with the size of the export.
A line that cannot be used (not JSON, not a resource, another resource type than the file's,
no patient reference) is counted and named by file and line, and the run goes on.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .domain.fhirdata import Malformed
from .domain.orders import Product, classify
from .domain.record import MEDICATION_USE_TYPES, READ_TYPES, name_medication

FILE_NAME = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)(?:\.[0-9A-Za-z_-]+)*\.ndjson$")
"""`Patient.ndjson`, `Patient.000.ndjson`, `Observation.2.ndjson`: the type is the first part."""
KEPT_TYPES = frozenset({*READ_TYPES, "Patient"})
"""What a patient's record is built from (PatientRecord keeps these, ServiceRequest for the
pending orders included); files of other types are not read."""
SHARED_TYPES = frozenset({"Medication"})
"""Types with no patient reference: kept only when a treated patient's record points to them."""
CONCEPTS_REMEMBERED = 10_000
"""Distinct inline medication concepts whose classification pass 1 keeps (then starts afresh)."""
BAD_LINES_KEPT = 200
"""Skipped lines named in the report; beyond that they are only counted (memory stays bounded
on an export that is all garbage)."""


class ExportError(Exception):
    """The export folder cannot be read at all (missing, not a folder, no NDJSON file)."""


@dataclass(frozen=True)
class ExportFile:
    path: Path
    resource_type: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class BadLine:
    """A line that was skipped, and why."""

    file: str
    line: int
    problem: str

    def as_json(self) -> dict[str, str | int]:
        return {"file": self.file, "line": self.line, "problem": self.problem}

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.problem}"


@dataclass
class Export:
    """The export's files by type, and those that are not read (with why)."""

    folder: Path
    files: list[ExportFile]
    not_read: list[tuple[str, str]] = field(default_factory=list)

    def of_types(self, types: frozenset[str] | tuple[str, ...]) -> list[ExportFile]:
        return [f for f in self.files if f.resource_type in types]


def open_export(folder: Path) -> Export:
    """The NDJSON files of an export folder, sorted by name; raises ExportError when the folder
    cannot be listed or holds no NDJSON file."""
    try:
        if not folder.is_dir():
            raise ExportError(
                f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder"
            )
        names = sorted(p for p in folder.iterdir() if p.name.endswith(".ndjson"))
    except OSError as exc:
        raise ExportError(f"cannot read {folder}: {exc.strerror or exc}") from exc
    if not names:
        raise ExportError(f"{folder}: no NDJSON file (*.ndjson) in the folder")
    export = Export(folder, [])
    for path in names:
        match = FILE_NAME.match(path.name)
        if match is None:
            export.not_read.append((path.name, "the resource type cannot be read from the name"))
        elif match["type"] not in KEPT_TYPES:
            export.not_read.append((path.name, f"{match['type']}: no check reads it"))
        else:
            export.files.append(ExportFile(path, match["type"]))
    return export


def subject_of(resource: dict[str, Any]) -> str | None:
    """The patient a resource is about: its own id for a Patient, else the id in its `subject`
    or `patient` reference (`Patient/<id>` or `urn:uuid:<id>`)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for element in ("subject", "patient"):
        ref = resource.get(element)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            value: str = ref["reference"]
            if value.startswith("urn:uuid:"):
                return value[len("urn:uuid:") :] or None
            if "Patient/" in value:
                return value.rsplit("Patient/", 1)[1].split("/")[0] or None
            return None
    return None


@dataclass
class Reading:
    """What the reader saw: lines read and skipped, per file."""

    lines: int = 0
    bad: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)

    def skip(self, file: ExportFile, number: int, problem: str) -> None:
        self.bad += 1
        if len(self.bad_lines) < BAD_LINES_KEPT:
            self.bad_lines.append(BadLine(file.name, number, problem))


def read_lines(
    file: ExportFile, reading: Reading | None = None
) -> Iterator[tuple[int, bytes, dict[str, Any], str | None]]:
    """(line number, raw line, resource, patient id) for every usable line of a file; unusable
    lines are counted in `reading` (when given) and skipped."""
    try:
        handle = file.path.open("rb")
    except OSError as exc:
        if reading is not None:
            reading.skip(file, 0, f"file cannot be read: {exc.strerror or exc}")
        return
    with handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue  # a blank line (the last newline, say) holds no resource
            if reading is not None:
                reading.lines += 1
            problem, resource, subject = _parse(line, file.resource_type)
            if problem is not None:
                if reading is not None:
                    reading.skip(file, number, problem)
                continue
            assert resource is not None
            yield number, line, resource, subject


def _parse(line: bytes, rtype: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg})", None, None
    if not isinstance(resource, dict):
        return "not a JSON object", None, None
    found = resource.get("resourceType")
    if found != rtype:
        return f"resourceType {found!r} in a {rtype} file", None, None
    if rtype in SHARED_TYPES:
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            return f"{rtype} without an id", None, None
        return None, resource, None
    subject = subject_of(resource)
    if subject is None:
        what = "an id" if rtype == "Patient" else "a patient (subject or patient reference)"
        return f"{rtype} without {what}", None, None
    return None, resource, subject


# -- pass 1: who was treated -------------------------------------------------------------------


def medication_key(reference: str) -> str:
    """`Medication/abc` and `.../fhir/Medication/abc` both name Medication abc."""
    return reference.rsplit("Medication/", 1)[-1]


def alemtuzumab_patients(export: Export) -> set[str]:
    """Every patient with a MedicationAdministration, MedicationStatement or MedicationRequest
    for alemtuzumab (Lemtrada or Campath, any status), read as the record reads medications:
    inline, contained or a referenced Medication from the export's Medication files."""
    alemtuzumab_medications: dict[str, dict[str, Any]] = {}
    for file in export.of_types(("Medication",)):
        for _, _, resource, _ in read_lines(file):
            if _product_of({"medicationCodeableConcept": resource.get("code")}) is not None:
                alemtuzumab_medications[f"Medication/{resource['id']}"] = resource
    treated: set[str] = set()
    by_concept: dict[bytes, Product | None] = {}
    for file in export.of_types(MEDICATION_USE_TYPES):
        for _, _, resource, subject in read_lines(file):
            if subject in treated:
                continue
            concept = resource.get("medicationCodeableConcept")
            if concept is None:
                product = _product_of(resource, alemtuzumab_medications)
            else:
                # An inline concept alone names the medication (name_medication), and the same
                # few hundred concepts repeat across an export: each is classified once.
                key = orjson.dumps(concept)
                if key not in by_concept:
                    if len(by_concept) >= CONCEPTS_REMEMBERED:
                        by_concept.clear()
                    by_concept[key] = _product_of(resource)
                product = by_concept[key]
            if product is not None:
                assert subject is not None
                treated.add(subject)
    return treated


def _product_of(
    holder: dict[str, Any], medications: dict[str, dict[str, Any]] | None = None
) -> Product | None:
    """Lemtrada or Campath when the entry names alemtuzumab; None for anything else."""
    pool: dict[str, dict[str, Any]] = {}
    ref = holder.get("medicationReference")
    if medications and isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        found = medications.get(f"Medication/{medication_key(ref['reference'])}")
        if found is not None:
            pool = {ref["reference"]: found}
    try:
        named = name_medication(holder, (pool,))
    except Malformed:
        return None
    product = classify(named.codes, named.words)
    return None if product is Product.OTHER else product


# -- pass 2: their records ---------------------------------------------------------------------


@dataclass
class Kept:
    """The raw lines of the treated patients' resources, and the Medications they point to."""

    by_patient: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    medications: dict[str, bytes] = field(default_factory=dict)
    """Medication lines by `Medication/<id>`, only those a kept resource references."""

    def resources_of(self, patient_id: str) -> list[dict[str, Any]]:
        """The patient's resources parsed (one patient at a time), with the Medications their
        medicationReferences name."""
        out: list[dict[str, Any]] = [orjson.loads(line) for line in self.by_patient[patient_id]]
        wanted = sorted({m for m in map(_medication_reference, out) if m is not None})
        out += [orjson.loads(self.medications[m]) for m in wanted if m in self.medications]
        return out


def _medication_reference(resource: dict[str, Any]) -> str | None:
    ref = resource.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        value: str = ref["reference"]
        if not value.startswith("#"):
            return f"Medication/{medication_key(value)}"
    return None


def collect(export: Export, patients: set[str], reading: Reading) -> Kept:
    """Pass 2: every file read once; the lines of `patients` kept raw, every other line dropped
    as soon as it is parsed. Medication files are read last, keeping only the Medications the
    kept resources reference."""
    kept = Kept()
    wanted: set[str] = set()
    for file in export.files:
        if file.resource_type in SHARED_TYPES:
            continue
        for _, line, resource, subject in read_lines(file, reading):
            if subject in patients:
                assert subject is not None
                kept.by_patient[subject].append(line)
                reference = _medication_reference(resource)
                if reference is not None:
                    wanted.add(reference)
    for file in export.of_types(tuple(SHARED_TYPES)):
        for _, line, resource, _ in read_lines(file, reading):
            key = f"Medication/{resource['id']}"
            if key in wanted:
                kept.medications[key] = line
    return kept
