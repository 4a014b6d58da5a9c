"""PatientRecord: one pass over the prefetched resources, indexed for the rules.

The record keeps raw JSON (cheap) and validates a resource with the R4B models only when a rule
reads it, so a 2 MB prefetch costs one walk, not thousands of model validations. Resources of other
patients and entered-in-error records are dropped here, once, for every rule.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, TypeVar

from ..models import validation_problem
from .fhirdata import Code, DateSpan, Malformed, codings, concept_words, first_date, reference_of
from .terminology import ValueSet

T = TypeVar("T")
CODE_ELEMENT = {
    "Observation": "code",
    "Condition": "code",
    "Immunization": "vaccineCode",
    "AllergyIntolerance": "code",
    "Procedure": "code",
    "ServiceRequest": "code",
}
MEDICATION_USE_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")
READ_TYPES = frozenset({*CODE_ELEMENT, *MEDICATION_USE_TYPES, "Medication"})
"""Resource types some rule reads; anything else in a prefetch (Claims, Encounters...) is
skipped."""
MEDICATION_USE_DATES = {
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
    "MedicationRequest": ("authoredOn",),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod.start"),
}
MEDICATION_USE_END = {
    "MedicationStatement": ("effectivePeriod.end", "effectiveDateTime"),
    "MedicationRequest": ("dispenseRequest.validityPeriod.end",),
    "MedicationAdministration": ("effectivePeriod.end", "effectiveDateTime"),
}


@dataclass(frozen=True)
class Unreadable:
    """A resource that may bear on a check but could not be read, and why."""

    reference: str
    problem: str

    def __str__(self) -> str:
        return f"{self.reference} ({self.problem})"


@dataclass(frozen=True)
class MedicationUse:
    """A medication-history entry with its medication resolved (code, reference or text)."""

    resource: dict[str, Any]
    codes: tuple[Code, ...]
    words: str
    start: DateSpan | None
    end: DateSpan | None

    @property
    def resource_type(self) -> str:
        return str(self.resource.get("resourceType"))

    @property
    def status(self) -> str | None:
        status = self.resource.get("status")
        return status if isinstance(status, str) else None


def _subject_id(resource: dict[str, Any]) -> str | None:
    for element in ("subject", "patient"):
        ref = resource.get(element)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            value: str = ref["reference"]
            if value.startswith("urn:uuid:"):
                return value[len("urn:uuid:") :]
            if "Patient/" in value:
                return value.rsplit("Patient/", 1)[1].split("/")[0]
            return None
    return None


def _entered_in_error(resource: dict[str, Any]) -> bool:
    if resource.get("status") == "entered-in-error":
        return True
    verification = resource.get("verificationStatus")
    if isinstance(verification, dict):
        try:
            return any(code == "entered-in-error" for _, code in codings(verification))
        except Malformed:
            return False
    return False


def iter_resources(value: Any) -> Iterator[dict[str, Any]]:
    """Resources in a prefetch value: a Bundle's entries (recursively), or the resource itself."""
    if not isinstance(value, dict):
        return
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict):
                    yield from iter_resources(entry.get("resource"))
        return
    yield value


def canonical_order(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Resources by (resourceType, id); resources sharing both are ordered by their content.

    The content key (sorted-key JSON) is computed only for those ties, so a large prefetch costs
    one cheap sort. A resource too deeply nested to serialise keeps its place among its ties.
    """

    def content(resource: dict[str, Any]) -> str:
        try:
            return json.dumps(resource, sort_keys=True, default=str)
        except (RecursionError, ValueError):
            return ""

    # Keys computed once per resource; the position breaks ties so resources are never compared.
    keyed = sorted(
        (str(r.get("resourceType")), str(r.get("id")), i) for i, r in enumerate(resources)
    )
    out: list[dict[str, Any]] = []
    for _, group in groupby(keyed, key=lambda k: k[:2]):
        ties = [resources[i] for _, _, i in group]
        out.extend(sorted(ties, key=content) if len(ties) > 1 else ties)
    return out


def _same_resource(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Both are one resource: same type, same non-empty id, same content. Copies that differ in
    anything (two versions, two id-less results) stay apart, as they always did."""
    rid = a.get("id")
    if not isinstance(rid, str) or not rid or b.get("id") != rid:
        return False
    if a.get("resourceType") != b.get("resourceType"):
        return False
    try:
        return a == b
    except RecursionError:  # nested too deeply to compare: keep both
        return False


@dataclass
class PatientRecord:
    """What the EHR told us about one patient, indexed by type and by code."""

    patient_id: str
    patient: dict[str, Any] | None = None
    by_type: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    by_code: dict[tuple[str, Code], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    uncoded: dict[str, list[Unreadable]] = field(default_factory=lambda: defaultdict(list))
    """Resources whose code could not even be read, by type: they may bear on any rule of that
    type."""
    by_full_url: dict[str, dict[str, Any]] = field(default_factory=dict)
    no_data: frozenset[str] = frozenset()
    """Resource types the EHR said it has no data for (prefetch value null)."""
    extra_members: Mapping[str, Mapping[Code, Code]] = field(default_factory=dict)
    """Codes a site's terminology server placed in a value set whose local file does not list
    them: {value set id: {code: the value set's root concept it is a kind of}}. Set by the engine
    before evaluation (see cds_service/terminology_server.py); empty without a server."""
    _codes_of_type: dict[str, set[Code]] = field(default_factory=lambda: defaultdict(set))
    _problems: dict[int, str | None] = field(default_factory=dict)
    _seq: dict[int, int] = field(default_factory=dict)
    _uses: tuple[list[MedicationUse], list[Unreadable]] | None = None
    _memo: dict[Any, Any] = field(default_factory=dict)
    """Readings several rules share, computed once per record (see `once`)."""

    @classmethod
    def build(
        cls,
        patient_id: str,
        values: Iterable[Any],
        no_data: Iterable[str] = (),
    ) -> PatientRecord:
        """Index every resource of this patient found in the prefetch values, in one pass.

        Resources are indexed in a canonical order (see `canonical_order`), so evidence lists and
        "first found" choices never depend on how the EHR or the FHIR server ordered or paged them.
        A resource sent twice (same type, id and content, e.g. under two prefetch keys) counts once.
        """
        record = cls(patient_id=patient_id, no_data=frozenset(no_data))
        found: list[dict[str, Any]] = []
        for value in values:
            if isinstance(value, dict) and value.get("resourceType") == "Bundle":
                entries = value.get("entry")  # the FHIR layer refuses a non-array entry (400)
                for entry in entries if isinstance(entries, list) else ():
                    if isinstance(entry, dict):
                        full_url = entry.get("fullUrl")
                        resource = entry.get("resource")
                        if isinstance(full_url, str) and isinstance(resource, dict):
                            record.by_full_url[full_url] = resource
            found.extend(iter_resources(value))
        previous: dict[str, Any] | None = None
        for resource in canonical_order(found):
            if previous is not None and _same_resource(previous, resource):
                continue  # one result arriving through two keys (laboratory and by code)
            record.add(resource)
            previous = resource
        return record

    def add(self, resource: dict[str, Any]) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            return  # not a FHIR resource (resourceType is not a string): no rule can read it
        if rtype not in READ_TYPES:
            if rtype == "Patient" and (
                resource.get("id") == self.patient_id or self.patient is None
            ):
                self.patient = resource
            return
        if rtype != "Medication":
            subject = _subject_id(resource)
            if subject is not None and subject != self.patient_id:
                return  # another patient's data: never evidence about this one
            if _entered_in_error(resource):
                return
        self.by_type[rtype].append(resource)
        self._seq[id(resource)] = len(self._seq)
        element = CODE_ELEMENT.get(rtype)
        if element is None:
            return
        try:
            for code in codings(resource.get(element)):
                self.by_code[(rtype, code)].append(resource)
                self._codes_of_type[rtype].add(code)
        except Malformed as exc:
            self.uncoded[rtype].append(Unreadable(reference_of(resource), str(exc)))

    # -- reading -----------------------------------------------------------------------------

    def problem(self, resource: dict[str, Any]) -> str | None:
        """Why a resource fails R4B validation (cached), or None when it is valid."""
        key = id(resource)
        if key not in self._problems:
            try:
                self._problems[key] = validation_problem(resource)
            except RecursionError:  # nesting deeper than the validator can walk: unreadable
                self._problems[key] = "nested too deeply to be read"
        return self._problems[key]

    def member(self, code: Code, value_set: ValueSet) -> bool:
        """The one membership test of the rules: the value set's own answer, else the site's
        terminology server's answer for this record (`extra_members`)."""
        return code in value_set or code in self.extra_members.get(value_set.id, {})

    def first_member(self, codes: Iterable[Code], value_set: ValueSet) -> Code | None:
        """The first of the codes that is a member of the value set (see `member`), if any."""
        return next((code for code in codes if self.member(code, value_set)), None)

    def server_root(self, code: Code, value_set: ValueSet) -> Code | None:
        """The root concept under which the terminology server placed a code the value set's
        file does not list; None when the local file decides (or no server was asked)."""
        if code in value_set:
            return None
        return self.extra_members.get(value_set.id, {}).get(code)

    def coded(self, rtype: str, value_set: ValueSet) -> list[dict[str, Any]]:
        """Resources of a type with a code in the value set (see `member`), each once, in record
        order. Several rules ask the same question: the answer is kept per record (keyed also by
        the terminology server's answers, which the engine sets before evaluation)."""
        key = ("coded", rtype, value_set.id, id(self.extra_members))
        found: list[dict[str, Any]] | None = self._memo.get(key)
        if found is None:
            seen: dict[int, dict[str, Any]] = {}
            for code in self._member_codes(rtype, value_set):
                for resource in self.by_code[(rtype, code)]:
                    seen.setdefault(id(resource), resource)
            found = sorted(seen.values(), key=lambda r: self._seq.get(id(r), 0))
            self._memo[key] = found
        return list(found)

    def _member_codes(self, rtype: str, value_set: ValueSet) -> list[Code]:
        """The codes on file for a type that are members of the value set (see `member`):
        walked from whichever side is smaller, the record's codes or the set's enumeration
        (plus, then, the record's codes a filter may accept and the server's answers)."""
        here = self._codes_of_type.get(rtype, set())
        if len(here) <= len(value_set.codes):
            return [code for code in here if self.member(code, value_set)]
        found = [code for code in value_set.codes if code in here]
        if value_set.filters:
            systems = value_set.filter_systems
            found += [
                c for c in here if c[0] in systems and c not in value_set.codes and c in value_set
            ]
        found += [
            c for c in self.extra_members.get(value_set.id, {}) if c in here and c not in value_set
        ]
        return found

    def split_readable(
        self, resources: Iterable[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[Unreadable]]:
        """Separate resources that validate from those that do not (named, with the reason)."""
        readable: list[dict[str, Any]] = []
        unreadable: list[Unreadable] = []
        for resource in resources:
            problem = self.problem(resource)
            if problem is None:
                readable.append(resource)
            else:
                unreadable.append(Unreadable(reference_of(resource), problem))
        return readable, unreadable

    def resolve_medication(self, holder: dict[str, Any]) -> tuple[tuple[Code, ...], str]:
        """Codes and words of the medication a request/statement/administration names."""
        named = name_medication(holder, (self.by_type.get("Medication", ()), self.by_full_url))
        return named.codes, named.words

    def once(self, key: str, compute: Callable[[PatientRecord], T]) -> T:
        """compute(self), computed on the first call for `key` and kept: a reading several
        rules share (the current diseases, say) is made once per record."""
        if key not in self._memo:
            self._memo[key] = compute(self)
        value: T = self._memo[key]
        return value

    def medication_uses(self) -> tuple[list[MedicationUse], list[Unreadable]]:
        """Every medication-history entry, resolved once per record; unreadable ones apart."""
        if self._uses is not None:
            return self._uses
        uses: list[MedicationUse] = []
        unreadable: list[Unreadable] = []
        for rtype in MEDICATION_USE_TYPES:
            for resource in self.by_type.get(rtype, ()):
                try:
                    codes, words = self.resolve_medication(resource)
                except Malformed as exc:
                    unreadable.append(Unreadable(reference_of(resource), str(exc)))
                    continue
                start = first_date(resource, *MEDICATION_USE_DATES[rtype])
                if start is None and rtype == "MedicationRequest":
                    start = _earliest_dosage_start(resource)
                end = first_date(resource, *MEDICATION_USE_END[rtype])
                uses.append(MedicationUse(resource, codes, words, start, end))
        self._uses = (uses, unreadable)
        return self._uses


def _earliest_dosage_start(request: dict[str, Any]) -> DateSpan | None:
    starts = dosage_starts(request)
    return min(starts) if starts else None


def dosage_starts(request: dict[str, Any]) -> list[DateSpan]:
    """Every boundsPeriod.start and timing.event date of a request's dosage instructions."""
    from .fhirdata import parse_date

    out: list[DateSpan] = []
    dosages = request.get("dosageInstruction")
    if not isinstance(dosages, list):
        return out
    for dosage in dosages:
        timing = dosage.get("timing") if isinstance(dosage, dict) else None
        if not isinstance(timing, dict):
            continue
        events = timing.get("event")
        if isinstance(events, list):
            out.extend(span for span in map(parse_date, events) if span is not None)
        repeat = timing.get("repeat")
        if isinstance(repeat, dict):
            bounds = repeat.get("boundsPeriod")
            if isinstance(bounds, dict):
                span = parse_date(bounds.get("start"))
                if span is not None:
                    out.append(span)
    return out


@dataclass(frozen=True)
class NamedMedication:
    """What a MedicationRequest, Statement or Administration says its medication is."""

    codes: tuple[Code, ...]
    words: str
    """Text and displays (the reference's display first), joined, for name matching."""
    found_in: int | None = None
    """Which pool held the referenced Medication (its index); CONTAINED for '#id'; None when the
    medication is inline (medicationCodeableConcept) or the reference resolved nowhere."""
    inline: bool = False


CONTAINED = -1


def name_medication(
    holder: dict[str, Any],
    pools: Iterable[Iterable[dict[str, Any]] | dict[str, dict[str, Any]]] = (),
) -> NamedMedication:
    """The one medication resolver (orders under review, medication history, other drafts):
    medicationCodeableConcept; else the referenced Medication, contained ('#id') or found in the
    first of `pools` that holds it (pools are read lazily, in order); else the reference's display.
    Raises Malformed when the codes cannot be read."""
    concept = holder.get("medicationCodeableConcept")
    if concept is not None:
        return NamedMedication(tuple(codings(concept)), concept_words(concept), inline=True)
    ref = holder.get("medicationReference")
    if not isinstance(ref, dict):
        return NamedMedication((), "")
    display = str(ref["display"]) if isinstance(ref.get("display"), str) else ""
    reference = ref.get("reference")
    medication = find_medication(reference, holder)
    found_in = CONTAINED if medication is not None else None
    if medication is None and isinstance(reference, str) and not reference.startswith("#"):
        for index, pool in enumerate(pools):
            medication = find_medication(reference, holder, pool)
            if medication is not None:
                found_in = index
                break
    if medication is None:
        return NamedMedication((), display)
    code = medication.get("code")
    words = " | ".join(w for w in (display, concept_words(code)) if w)
    return NamedMedication(tuple(codings(code)), words, found_in)


def find_medication(
    reference: Any,
    holder: dict[str, Any],
    *pools: Iterable[dict[str, Any]] | dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    """The Medication a reference points to: contained ('#id'), by fullUrl, or 'Medication/id'."""
    if not isinstance(reference, str) or not reference:
        return None
    if reference.startswith("#"):
        contained = holder.get("contained")
        if isinstance(contained, list):
            for resource in contained:
                if (
                    isinstance(resource, dict)
                    and resource.get("resourceType") == "Medication"
                    and resource.get("id") == reference[1:]
                ):
                    return resource
        return None
    wanted_id = reference.rsplit("Medication/", 1)[1] if "Medication/" in reference else None
    for pool in pools:
        if isinstance(pool, dict):
            found = pool.get(reference)
            if isinstance(found, dict) and found.get("resourceType") == "Medication":
                return found
            continue
        for resource in pool:
            if (
                isinstance(resource, dict)
                and resource.get("resourceType") == "Medication"
                and wanted_id is not None
                and resource.get("id") == wanted_id
            ):
                return resource
    return None
