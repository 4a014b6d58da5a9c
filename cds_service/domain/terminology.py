"""Value sets shipped as FHIR ValueSet JSON, loaded once into sets for O(1) membership.

Medication value sets carry, per concept, the ingredient it belongs to and, per value set,
the names to look for in free text (the fallback when a medication is not coded).

Hierarchies (issue 13). Local membership = the enumerated concepts of `compose.include`, plus the
codes an ICD-10-CM `regex` filter of an include accepts, minus what `compose.exclude` names
(enumerated or by regex). A regex filter is written against the code AS WRITTEN IN ICD-10-CM,
with its dot (`C50\\..*`), and must match the whole code (FHIR's regex filter; `re.fullmatch`).
Codes are stored normalised (upper case, no dot: fhirdata.normalise_code), so the dotted form is
rebuilt before matching (the dot of an ICD-10-CM code always follows the third character): `C50.911`
and `C50911` are the same member. SNOMED CT `is-a` filters cannot be evaluated here (no open
distribution of SNOMED CT): they are kept as data (`ValueSet.roots`) for a terminology server, and
their descendants are shipped as enumerated concepts gathered from public expansions. Regex
results are cached per code, so membership stays a dictionary look-up after the first time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any, cast

from .fhirdata import ICD10CM, Code, normalise_code

BASE_URL = "https://cds-service.example.org/fhir"
INGREDIENT_EXT = f"{BASE_URL}/StructureDefinition/ingredient"
NAME_MATCH_EXT = f"{BASE_URL}/StructureDefinition/name-match"
SOURCE_EXT = f"{BASE_URL}/StructureDefinition/source"
OUTSIDE_LABORATORY_EXT = f"{BASE_URL}/StructureDefinition/may-be-filed-outside-laboratory"
"""Concept-level flag (valueBoolean true): a test often done and filed outside the laboratory
(a tuberculin skin test read in clinic, a point-of-care urine hCG), so its Observation may carry
no `laboratory` category and must be asked for by code as well (see services.prefetch_templates)."""
RESULT_ROLE_EXT = f"{BASE_URL}/StructureDefinition/result-role"
"""Concept-level role of a result code (valueCode), read by domain/result_grammar.py: a panel
component (qft-nil, qft-antigen-minus-nil, qft-mitogen-minus-nil, tspot-nil, tspot-antigen,
tspot-mitogen: never a result on its own) or a measured reading (tst-induration)."""


REGEX_CACHE_LIMIT = 50_000
"""Codes remembered per value set for its regex filters; past this the memo starts afresh (a
bound on memory for a long-lived process that sees many distinct codes)."""
REGEX_SYSTEMS = frozenset({ICD10CM})
"""Code systems whose `regex` filters are evaluated locally."""


def icd10cm_dotted(code: str) -> str:
    """An ICD-10-CM code as written in the code system: the dot after the third character."""
    code = code.replace(".", "").upper()
    return code if len(code) <= 3 else f"{code[:3]}.{code[3:]}"


@dataclass(frozen=True)
class CodeFilter:
    """A `regex` filter of one include or exclude, on one code system."""

    system: str
    pattern: re.Pattern[str]

    def accepts(self, code: Code) -> bool:
        if code[0] != self.system:
            return False
        written = icd10cm_dotted(code[1]) if self.system == ICD10CM else code[1]
        return self.pattern.fullmatch(written) is not None


@dataclass(frozen=True)
class ValueSet:
    """An expanded value set: its codes, and for medications the ingredient of each code and
    name."""

    id: str
    url: str
    title: str
    codes: frozenset[Code]
    displays: dict[Code, str] = field(default_factory=dict, hash=False, compare=False)
    ingredient_of_code: dict[Code, str] = field(default_factory=dict, hash=False, compare=False)
    names: tuple[tuple[str, str], ...] = ()
    """(name as written, ingredient) pairs for text matching."""
    name_pattern: re.Pattern[str] | None = field(default=None, hash=False, compare=False)
    outside_laboratory: frozenset[Code] = frozenset()
    """Codes flagged as possibly filed outside the laboratory category (OUTSIDE_LABORATORY_EXT)."""
    filters: tuple[CodeFilter, ...] = ()
    """Regex filters of compose.include (ICD-10-CM ranges)."""
    excluded: frozenset[Code] = frozenset()
    """Codes compose.exclude names; never members, even when a filter accepts them."""
    exclude_filters: tuple[CodeFilter, ...] = ()
    roots: tuple[Code, ...] = ()
    """Root concepts of `is-a` filters (SNOMED CT): for a terminology server, not evaluated here."""
    _memo: dict[Code, bool] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def filter_systems(self) -> frozenset[str]:
        """Code systems whose codes may be members through a filter (not only by enumeration)."""
        return frozenset(f.system for f in self.filters)

    roles: dict[Code, str] = field(default_factory=dict, hash=False, compare=False)
    """The result role of a code (RESULT_ROLE_EXT), for the codes that have one."""

    def __contains__(self, code: object) -> bool:
        if code in self.codes:
            return True
        if not self.filters or not isinstance(code, tuple) or len(code) != 2:
            return False
        key = cast(Code, code)
        known = self._memo.get(key)
        if known is None:
            known = key not in self.excluded and (
                any(f.accepts(key) for f in self.filters)
                and not any(f.accepts(key) for f in self.exclude_filters)
            )
            if len(self._memo) >= REGEX_CACHE_LIMIT:
                self._memo.clear()
            self._memo[key] = known
        return known

    def matches_any(self, codes: list[Code]) -> Code | None:
        """The first of the codes in this value set, if any."""
        for code in codes:
            if code in self:
                return code
        return None

    def name_in(self, text: str) -> tuple[str, str] | None:
        """The (name, ingredient) a free text mentions, matched as whole words, case-insensitive."""
        if not text or self.name_pattern is None:
            return None
        match = self.name_pattern.search(text)
        if match is None:
            return None
        found = match.group(0).casefold()
        for name, ingredient in self.names:
            if name.casefold() == found:
                return name, ingredient
        return None  # pragma: no cover - the pattern is built from self.names

    def display(self, code: Code) -> str:
        return self.displays.get(code, code[1])

    def role_of(self, code: Code) -> str | None:
        return self.roles.get(code)


def _ext_value(extensions: Any, url: str) -> list[Any]:
    if not isinstance(extensions, list):
        return []
    return [e for e in extensions if isinstance(e, dict) and e.get("url") == url]


def _filters(
    part: dict[str, Any], roots: list[Code] | None = None
) -> tuple[list[CodeFilter], list[Code]]:
    """The regex filters of one include/exclude, and the roots of its is-a filters.

    A regex filter on a system other than ICD-10-CM, or a filter with another operator, is
    refused: it would silently match nothing here (a programming error in a shipped file)."""
    system = part["system"]
    regexes: list[CodeFilter] = []
    found_roots: list[Code] = []
    for flt in part.get("filter", []):
        op, prop, value = flt.get("op"), flt.get("property"), flt.get("value")
        if op == "regex" and prop == "code" and system in REGEX_SYSTEMS:
            regexes.append(CodeFilter(system, re.compile(value)))
        elif op in ("is-a", "descendent-of") and prop == "concept":
            found_roots.append(normalise_code(system, value))
        else:
            raise ValueError(f"unsupported filter {flt!r} on {system}")
    return regexes, found_roots


def parse_value_set(doc: dict[str, Any]) -> ValueSet:
    """Build a ValueSet from FHIR ValueSet JSON: compose.include with explicit concepts, ICD-10-CM
    regex filters and SNOMED CT is-a roots; compose.exclude with concepts or regex filters."""
    codes: set[Code] = set()
    displays: dict[Code, str] = {}
    ingredient_of_code: dict[Code, str] = {}
    outside_laboratory: set[Code] = set()
    filters: list[CodeFilter] = []
    roots: list[Code] = []
    excluded: set[Code] = set()
    exclude_filters: list[CodeFilter] = []
    for exclude in doc.get("compose", {}).get("exclude", []):
        regexes, _ = _filters(exclude)
        exclude_filters.extend(regexes)
        for concept in exclude.get("concept", []):
            excluded.add(normalise_code(exclude["system"], concept["code"]))
    roles: dict[Code, str] = {}
    for include in doc.get("compose", {}).get("include", []):
        system = include["system"]
        regexes, found_roots = _filters(include)
        filters.extend(regexes)
        roots.extend(found_roots)
        for concept in include.get("concept", []):
            code = normalise_code(system, concept["code"])
            codes.add(code)
            displays[code] = concept.get("display", concept["code"])
            for ext in _ext_value(concept.get("extension"), INGREDIENT_EXT):
                ingredient_of_code[code] = ext["valueString"].casefold()
            if any(
                ext.get("valueBoolean") is True
                for ext in _ext_value(concept.get("extension"), OUTSIDE_LABORATORY_EXT)
            ):
                outside_laboratory.add(code)
            for ext in _ext_value(concept.get("extension"), RESULT_ROLE_EXT):
                roles[code] = ext["valueCode"]
    names: list[tuple[str, str]] = []
    for ext in _ext_value(doc.get("extension"), NAME_MATCH_EXT):
        parts = {e["url"]: e["valueString"] for e in ext.get("extension", [])}
        names.append((parts["name"], parts["ingredient"].casefold()))
    pattern = None
    if names:
        alternatives = sorted({re.escape(n) for n, _ in names}, key=len, reverse=True)
        pattern = re.compile(
            r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE
        )
    members = {
        code
        for code in codes
        if code not in excluded and not any(f.accepts(code) for f in exclude_filters)
    }
    return ValueSet(
        id=doc["id"],
        url=doc["url"],
        title=doc.get("title", doc["id"]),
        codes=frozenset(members),
        displays=displays,
        ingredient_of_code=ingredient_of_code,
        names=tuple(names),
        name_pattern=pattern,
        outside_laboratory=frozenset(outside_laboratory),
        filters=tuple(filters),
        excluded=frozenset(excluded),
        exclude_filters=tuple(exclude_filters),
        roots=tuple(dict.fromkeys(roots)),
        roles=roles,
    )


@cache
def all_value_sets() -> dict[str, ValueSet]:
    """Every value set shipped in the package, by id (read once per process)."""
    folder = resources.files("cds_service") / "terminology" / "valuesets"
    out: dict[str, ValueSet] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            doc = json.loads(entry.read_text(encoding="utf-8"))
            out[doc["id"]] = parse_value_set(doc)
    return out


def value_set(vs_id: str) -> ValueSet:
    """One value set by id; an unknown id is a programming error and raises KeyError."""
    return all_value_sets()[vs_id]


def known_systems() -> frozenset[str]:
    """Code systems any value set uses (for telling implementers which codings we will read)."""
    return frozenset(
        system
        for vs in all_value_sets().values()
        for system in {s for s, _ in vs.codes} | vs.filter_systems
    )


# -- condition keywords (the safety net for conditions no value set recognises) -----------------

_CLAUSE_END = re.compile(r"[,;:.|]|(?<![a-z0-9])(?:but|with)(?![a-z0-9])")


def _phrase_pattern(phrases: list[str]) -> re.Pattern[str] | None:
    """Whole-word alternatives; '*' at either end lets a word start or continue inside a word."""
    parts = []
    for phrase in sorted(phrases, key=len, reverse=True):
        core = re.escape(phrase.strip("*").casefold())
        start = "" if phrase.startswith("*") else r"(?<![a-z0-9])"
        end = r"[a-z0-9]*" if phrase.endswith("*") else r"(?![a-z0-9])"
        parts.append(start + core + end)
    return re.compile("|".join(parts)) if parts else None


@dataclass(frozen=True)
class KeywordClass:
    """The words naming one class of disease (malignancy, infection) and the phrases that mean
    a text naming them is not a current disease of that class."""

    words: re.Pattern[str] | None
    negations: re.Pattern[str] | None
    clause_exclusions: re.Pattern[str] | None

    def named_in(self, text: str) -> str | None:
        """The first word of this class the text names outside a negated or excluded phrase.

        Clause by clause: an exclusion ('benign', 'carrier', 'screening') silences its whole
        clause; a negation ('no evidence of', 'history of') silences what follows it in its
        clause, so 'Pneumonia, no evidence of sepsis' still names pneumonia."""
        text = text.casefold()
        return _remembered(self, text) if len(text) <= REMEMBERED_TEXT else _named_in(self, text)


REMEMBERED_TEXT = 300
"""Texts up to this length (a display, a problem-list name) have their reading remembered:
problem lists repeat the same displays. Longer ones are read each time, so a hostile request
cannot fill memory."""


@lru_cache(maxsize=4096)
def _remembered(keywords: KeywordClass, text: str) -> str | None:
    return _named_in(keywords, text)


def _named_in(keywords: KeywordClass, text: str) -> str | None:
    """KeywordClass.named_in on a case-folded text."""
    if keywords.words is None or keywords.words.search(text) is None:
        return None  # most texts name no word of the class: one search
    for clause in _CLAUSE_END.split(text):
        if keywords.clause_exclusions is not None and keywords.clause_exclusions.search(clause):
            continue
        negation = keywords.negations.search(clause) if keywords.negations is not None else None
        limit = negation.start() if negation is not None else len(clause)
        word = keywords.words.search(clause)
        if word is not None and word.start() < limit:
            return _whole_word(clause, word.start(), word.end())
    return None


def _whole_word(text: str, start: int, end: int) -> str:
    """The whole word around a match ('mycosis' in 'onychomycosis', 'covid' in 'covid-19')."""
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] == "-"):
        end += 1
    return text[start:end]


@dataclass(frozen=True)
class ConditionKeywords:
    """terminology/condition-keywords.json: the keyword classes and which codings are left out
    (not diseases: findings, situations, procedures; ICD-10-CM history, screening and external
    causes)."""

    classes: dict[str, KeywordClass]
    left_out_tags: frozenset[str]
    left_out_icd10cm: tuple[str, ...]

    def left_out_display(self, text: str) -> bool:
        """Whether a display or text ends in a left-out SNOMED CT semantic tag ('(finding)')."""
        text = text.strip().casefold()
        if not text.endswith(")") or "(" not in text:
            return False
        return text[text.rfind("(") + 1 : -1].strip() in self.left_out_tags


@cache
def condition_keywords() -> ConditionKeywords:
    """The safety-net keywords, read once. Kept as data (terminology/condition-keywords.json,
    whose description gives the matching rules) so a reviewer edits a list, not a rule module."""
    doc = json.loads(
        (resources.files("cds_service") / "terminology" / "condition-keywords.json").read_text(
            encoding="utf-8"
        )
    )
    exclusions = list(doc["clause_exclusions"])
    classes = {
        name: KeywordClass(
            words=_phrase_pattern(list(entry["words"])),
            negations=_phrase_pattern(list(doc["negations"])),
            clause_exclusions=_phrase_pattern([*exclusions, *entry.get("not_disease", ())]),
        )
        for name, entry in doc["classes"].items()
    }
    return ConditionKeywords(
        classes=classes,
        left_out_tags=frozenset(tag.casefold() for tag in doc["left_out_semantic_tags"]),
        left_out_icd10cm=tuple(doc["left_out_icd10cm_chapters"]),
    )
