"""The result grammar: how one lab result is read as positive, negative or indeterminate.

A result is read from the first of these that says something, in this order (issue 13):

1. **Interpretation** (`Observation.interpretation`): HL7 v3 ObservationInterpretation codes of
   the result-positive/-negative/-indeterminate value sets (POS, NEG, DET, ND, RR, NR, WR, IND,
   E), then the display or text of each interpretation read as an answer phrase ("Reactive").
   A bare high/low/abnormal/normal flag (H, HH, L, LL, A, AA, N) is not an answer by itself, and
   R means "resistant" (susceptibility), never "reactive". The lab's own interpretation wins
   over everything below.
2. **Coded value** (`valueCodeableConcept`): SNOMED CT qualifier values and LOINC answer codes
   of the same value sets, then the concept's text and displays as an answer phrase.
3. **Quantity with its unit**, by the kind of test:
   - quantitative serum hCG against the cited cut-offs (policy `hcg_negative_below`,
     `hcg_positive_from`; in between: equivocal, repeat);
   - tuberculin skin test induration in mm against `tst_positive_mm` (a local choice);
   - viral load (HIV, HCV RNA, log10 or not): zero is not detected; a value below the limit of
     quantification (comparator `<`) is "detected, not quantified" unless the lab says not
     detected (interpretation ND, a coded answer, a note or text); any other value is detected;
   - QuantiFERON and T-SPOT.TB components (nil, antigen and mitogen tubes, spot counts) by the
     manufacturer's rule (`read_components`); they never outrank an overall result of the same
     day (rules/labs.py drops them then);
   - any other test reported as a number (an index, a signal-to-cut-off ratio): against the
     result's `referenceRange` (a range whose text names an answer is matched by containment;
     a plain range with an upper end: inside is negative, above is positive; a range with only
     a lower end is not guessed), else, without any range, the lab's H/N flag.
4. **Text** (`valueString`, and the texts above): negation is scoped to its phrase ("not
   reactive" is negative), phrases are split at punctuation and conjunctions and read per
   analyte. Any positive analyte makes the text positive (never negative when a part is
   positive); two answers about the same analyte make it indeterminate.

Nothing readable is indeterminate. A reading says how it was read (`how`, a key of the
[evidence] `read-<how>` lines of wording.toml) and the value it read, in readable units.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from . import lab_values
from .fhirdata import LOINC, SNOMED, V3_INTERPRETATION, Code, Malformed, codings
from .policy import load_policy
from .terminology import ValueSet, value_set

POSITIVE_VS, NEGATIVE_VS, INDETERMINATE_VS = (
    "result-positive",
    "result-negative",
    "result-indeterminate",
)


class Meaning(Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    INDETERMINATE = "indeterminate"


class Kind(Enum):
    """How a quantity of a test is read (step 3)."""

    QUALITATIVE = "qualitative"
    """A qualitative test, perhaps reported as a number against its range."""
    NUCLEIC_ACID = "nucleic-acid"
    HCG = "hcg"


@dataclass(frozen=True)
class Reading:
    """What a result says, how it was read (a wording key) and the value as a clinician reads it."""

    meaning: Meaning
    how: str
    value: str = ""
    codes: tuple[str, ...] = ()
    """The raw codes read (for the evidence facts, not the sentence)."""
    values: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    """Named values a `read-<how>` line fills in (components, cut-offs)."""


NOTHING = Reading(Meaning.INDETERMINATE, "nothing-readable")

READ_HOWS = (
    "interpretation",
    "interpretation-text",
    "coded-value",
    "text",
    "nothing-readable",
    "number-without-reading",
    "hcg-cutoff",
    "hcg-equivocal",
    "tst-induration",
    "viral-load-not-detected",
    "viral-load-below-limit",
    "viral-load-zero",
    "viral-load-detected",
    "range-answer",
    "above-range",
    "within-range",
    "lab-flag-high",
    "lab-flag-normal",
    "panel-incomplete",
    "qft-rule",
    "qft-high-nil",
    "qft-low-mitogen",
    "tspot-rule",
    "tspot-borderline",
    "tspot-invalid",
)
"""Every way a result can be read: each has a `read-<how>` line in wording.toml [evidence]."""

# -- Codes ----------------------------------------------------------------------------------------

SYSTEM_NAMES = {LOINC: "LOINC", SNOMED: "SNOMED CT", V3_INTERPRETATION: "v3"}


def code_label(code: Code) -> str:
    """'SNOMED CT 11214006' for the evidence facts."""
    return f"{SYSTEM_NAMES.get(code[0], code[0])} {code[1]}"


def _meaning_of_codes(codes: list[Code]) -> tuple[Meaning, Code] | None:
    for meaning, vs_id in (
        (Meaning.POSITIVE, POSITIVE_VS),
        (Meaning.NEGATIVE, NEGATIVE_VS),
        (Meaning.INDETERMINATE, INDETERMINATE_VS),
    ):
        found = value_set(vs_id).matches_any(codes)
        if found is not None:
            return meaning, found
    return None


def _safe_codings(concept: Any) -> list[Code]:
    try:
        return codings(concept)
    except Malformed:
        return []


def _concept_texts(concept: Any) -> list[str]:
    """The text, then each display, of a CodeableConcept."""
    if not isinstance(concept, dict):
        return []
    out = [concept["text"]] if isinstance(concept.get("text"), str) else []
    raw = concept.get("coding")
    if isinstance(raw, list):
        out += [
            c["display"] for c in raw if isinstance(c, dict) and isinstance(c.get("display"), str)
        ]
    return out


# -- Text -----------------------------------------------------------------------------------------

_ANSWERS: tuple[tuple[str, Meaning], ...] = (
    # Longest first: "non-reactive" before "reactive", "not detected" before "detected".
    (r"non[- ]?reactive", Meaning.NEGATIVE),
    (r"un ?detect(?:ed|able)", Meaning.NEGATIVE),
    (r"weakly reactive", Meaning.POSITIVE),
    (r"presumptive(?:ly)? positive", Meaning.POSITIVE),
    (r"indeterminate|equivocal|inconclusive|borderline|invalid|ind", Meaning.INDETERMINATE),
    # A "positive control" or "negative control" is a part of the kit, not an answer.
    (r"(?:negative|neg)(?!\s+control)|absent|nr", Meaning.NEGATIVE),
    (r"reactive|detected|(?:positive|pos)(?!\s+control)|present", Meaning.POSITIVE),
)
_ANSWER = re.compile(
    r"\b(?P<neg>(?:not|no|none)\b.*?\s)?(?P<answer>"
    + "|".join(f"(?:{pattern})" for pattern, _ in _ANSWERS)
    + r")\b",
    re.IGNORECASE,
)
_ANSWER_MEANINGS = [(re.compile(rf"^(?:{p})$", re.IGNORECASE), m) for p, m in _ANSWERS]
_CLAUSE_SPLIT = re.compile(r"[,;.\n]+|\s(?:and|but|while|whereas)\s|\s/\s", re.IGNORECASE)
_FILLER = re.compile(
    r"\b(?:not|no|none|result|results|is|was|were|are|for|the|a|an|of|test|screen|screening|"
    r"interpretation|by|final|overall|specimen|sample|value|report|reported)\b",
    re.IGNORECASE,
)


def _answer_meaning(word: str) -> Meaning:
    for pattern, meaning in _ANSWER_MEANINGS:
        if pattern.match(word):
            return meaning
    return Meaning.INDETERMINATE  # pragma: no cover - the pattern is built from _ANSWERS


def _negated(meaning: Meaning) -> Meaning:
    """'not positive' is negative; 'not negative' is no all-clear, and not a positive either."""
    return Meaning.NEGATIVE if meaning is Meaning.POSITIVE else Meaning.INDETERMINATE


def _analyte(clause: str, answer_spans: list[tuple[int, int]]) -> str:
    """What a clause is about: its words without the answers and filler ('hiv1 ab')."""
    kept, start = [], 0
    for begin, end in answer_spans:
        kept.append(clause[start:begin])
        start = end
    kept.append(clause[start:])
    words = _FILLER.sub(" ", " ".join(kept)).casefold()
    return " ".join(re.sub(r"[^a-z0-9+ ]", "", words).split())


@dataclass(frozen=True)
class TextReading:
    """A text read per analyte: the answer about each thing it names ('' when it names none)."""

    by_analyte: Mapping[str, Meaning]

    @property
    def meaning(self) -> Meaning | None:
        """Positive when any analyte is; else indeterminate when any is; else negative."""
        found = set(self.by_analyte.values())
        for meaning in (Meaning.POSITIVE, Meaning.INDETERMINATE, Meaning.NEGATIVE):
            if meaning in found:
                return meaning
        return None


def read_text(text: str) -> TextReading:
    """Answers of a free text, per analyte: negation scoped to its phrase, each clause read on
    its own; two different answers about one analyte are indeterminate."""
    by_analyte: dict[str, Meaning] = {}
    for clause in _CLAUSE_SPLIT.split(text or ""):
        matches = list(_ANSWER.finditer(clause))
        if not matches:
            continue
        meanings = {
            _negated(_answer_meaning(m.group("answer")))
            if m.group("neg")
            else _answer_meaning(m.group("answer"))
            for m in matches
        }
        meaning = meanings.pop() if len(meanings) == 1 else Meaning.INDETERMINATE
        analyte = _analyte(clause, [m.span() for m in matches])
        earlier = by_analyte.get(analyte)
        by_analyte[analyte] = meaning if earlier in (None, meaning) else Meaning.INDETERMINATE
    return TextReading(by_analyte)


def _text_meaning(texts: Iterable[str]) -> Meaning | None:
    return read_text("; ".join(t for t in texts if t.strip())).meaning


# -- Quantities -----------------------------------------------------------------------------------

_UNIT_WORDS = {
    "{index}": "index",
    "{s/co}": "S/CO",
    "{ratio}": "ratio",
    "{#}": "",
    "{spots}": "spots",
}


def readable_unit(quantity: Mapping[str, Any]) -> str:
    """The unit of a Quantity as a clinician writes it: its `unit` (else its `code`), a few
    qualitative annotations as words ('{s/co}' -> 'S/CO'), the rest without UCUM braces and
    brackets as lab_values.readable_unit writes every unit ('[IU]/L' -> 'IU/L')."""
    unit, code = quantity.get("unit"), quantity.get("code")
    for candidate in (unit, code):
        if isinstance(candidate, str) and candidate.strip():
            text = candidate.strip()
            if text.casefold() in _UNIT_WORDS:
                return _UNIT_WORDS[text.casefold()]
            return lab_values.readable_unit(text)
    return ""


def _unit_key(quantity: Mapping[str, Any]) -> str:
    return readable_unit(quantity).casefold().replace(" ", "")


def quantity_text(quantity: Mapping[str, Any]) -> str:
    """'<15 IU/mL', '3 mIU/mL', '1.3 index'."""
    value = quantity.get("value")
    comparator = quantity.get("comparator") if isinstance(quantity.get("comparator"), str) else ""
    number = f"{value:g}" if isinstance(value, (int, float)) else "?"
    unit = readable_unit(quantity)
    return f"{comparator}{number} {unit}".strip()


def _number(quantity: Any) -> float | None:
    if not isinstance(quantity, dict):
        return None
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


_MILLI_IU_PER_ML = {"miu/ml": 1.0, "iu/l": 1.0, "mu/ml": 1.0, "u/l": 1.0, "iu/ml": 1000.0}
"""Units of hCG concentration and their factor to mIU/mL (1 IU/L = 1 mIU/mL)."""


def _policy(key: str) -> int:
    return load_policy()[key]


def _read_hcg(quantity: Mapping[str, Any]) -> Reading | None:
    value, factor = _number(quantity), _MILLI_IU_PER_ML.get(_unit_key(quantity))
    if value is None or factor is None:
        return None
    miu = value * factor
    low, high = _policy("hcg_negative_below"), _policy("hcg_positive_from")
    comparator = quantity.get("comparator")
    shown = quantity_text(quantity)
    cutoffs = {"low": str(low), "high": str(high)}
    if comparator in ("<", "<=") and miu <= low:
        return Reading(Meaning.NEGATIVE, "hcg-cutoff", shown, values=cutoffs)
    if comparator in (">", ">=") and miu >= high:
        return Reading(Meaning.POSITIVE, "hcg-cutoff", shown, values=cutoffs)
    if comparator not in (None, "<", "<=", ">", ">="):
        return None
    if comparator is None and miu < low:
        return Reading(Meaning.NEGATIVE, "hcg-cutoff", shown, values=cutoffs)
    if comparator is None and miu >= high:
        return Reading(Meaning.POSITIVE, "hcg-cutoff", shown, values=cutoffs)
    return Reading(Meaning.INDETERMINATE, "hcg-equivocal", shown, values=cutoffs)


_MM = {"mm": 1.0, "cm": 10.0}


def _read_tst(quantity: Mapping[str, Any]) -> Reading | None:
    value, factor = _number(quantity), _MM.get(_unit_key(quantity))
    if value is None or factor is None or quantity.get("comparator") is not None:
        return None
    cutoff = _policy("tst_positive_mm")
    meaning = Meaning.POSITIVE if value * factor >= cutoff else Meaning.NEGATIVE
    return Reading(
        meaning, "tst-induration", quantity_text(quantity), values={"cutoff": str(cutoff)}
    )


def _says_not_detected(observation: Mapping[str, Any]) -> bool:
    """The lab says RNA was not detected: a note, or any text of the result."""
    texts: list[str] = []
    notes = observation.get("note")
    if isinstance(notes, list):
        texts += [
            n["text"] for n in notes if isinstance(n, dict) and isinstance(n.get("text"), str)
        ]
    interpretations = observation.get("interpretation")
    if isinstance(interpretations, list):
        for concept in interpretations:
            texts += _concept_texts(concept)
    return _text_meaning(texts) is Meaning.NEGATIVE


def _read_viral_load(observation: Mapping[str, Any], quantity: Mapping[str, Any]) -> Reading | None:
    value = _number(quantity)
    if value is None:
        return None
    comparator = quantity.get("comparator")
    shown = quantity_text(quantity)
    if comparator in ("<", "<="):
        if _says_not_detected(observation):
            return Reading(Meaning.NEGATIVE, "viral-load-not-detected", shown)
        return Reading(Meaning.POSITIVE, "viral-load-below-limit", shown)
    if value == 0 and comparator is None and "log" not in _unit_key(quantity):
        return Reading(Meaning.NEGATIVE, "viral-load-zero", shown)
    if value > 0 or comparator in (">", ">="):
        return Reading(Meaning.POSITIVE, "viral-load-detected", shown)
    return None


def _range_number(range_: Mapping[str, Any], end: str) -> float | None:
    return _number(range_.get(end))


def _read_against_range(
    observation: Mapping[str, Any], quantity: Mapping[str, Any]
) -> Reading | None:
    """A qualitative test reported as a number: the range containing it (when the range's
    text names an answer), or the lab's normal range (inside: negative; above: positive)."""
    value = _number(quantity)
    if value is None or not readable_unit(quantity) or quantity.get("comparator") is not None:
        return None
    shown = quantity_text(quantity)
    ranges = observation.get("referenceRange")
    plain: list[tuple[float | None, float | None, str]] = []
    if isinstance(ranges, list):
        for range_ in ranges:
            if not isinstance(range_, dict):
                continue
            low, high = _range_number(range_, "low"), _range_number(range_, "high")
            if low is None and high is None:
                continue
            raw_text = range_.get("text")
            text = raw_text if isinstance(raw_text, str) else ""
            named = _text_meaning([text]) if text else None
            inside = (low is None or value >= low) and (high is None or value <= high)
            if named is not None and inside:
                return Reading(named, "range-answer", shown, values={"range": text})
            if named is None:
                plain.append((low, high, text or _range_text(low, high, quantity)))
    if plain:
        # A plain range is read only when it has an upper end (the non-reactive range); a range
        # with only a lower end may be the immune or reactive range: not guessed.
        low, high, text = plain[0]
        if high is None:
            return None
        if value > high:
            return Reading(Meaning.POSITIVE, "above-range", shown, values={"range": text})
        if (low is None or value >= low) and (high is None or value <= high):
            return Reading(Meaning.NEGATIVE, "within-range", shown, values={"range": text})
        return None
    interpretations = observation.get("interpretation")
    flags = {
        code
        for concept in (interpretations if isinstance(interpretations, list) else [])
        for system, code in _safe_codings(concept)
        if system == V3_INTERPRETATION
    }
    if flags & {"H", "HH", "HU", "A", "AA"}:
        return Reading(Meaning.POSITIVE, "lab-flag-high", shown)
    if "N" in flags:
        return Reading(Meaning.NEGATIVE, "lab-flag-normal", shown)
    return None


def _range_text(low: float | None, high: float | None, quantity: Mapping[str, Any]) -> str:
    unit = readable_unit(quantity)
    if low is not None and high is not None:
        return f"{low:g}-{high:g} {unit}".strip()
    if high is not None:
        return f"<={high:g} {unit}".strip()
    return f">={low:g} {unit}".strip()


# -- Panels: QuantiFERON and T-SPOT.TB components ---------------------------------------------

QFT_NIL, QFT_ANTIGEN, QFT_MITOGEN = "qft-nil", "qft-antigen-minus-nil", "qft-mitogen-minus-nil"
TSPOT_NIL, TSPOT_ANTIGEN, TSPOT_MITOGEN = "tspot-nil", "tspot-antigen", "tspot-mitogen"
TST_INDURATION = "tst-induration"
COMPONENT_ROLES = frozenset(
    {QFT_NIL, QFT_ANTIGEN, QFT_MITOGEN, TSPOT_NIL, TSPOT_ANTIGEN, TSPOT_MITOGEN}
)


def role_of(code: Code | None, label: str, vs: ValueSet | None) -> str | None:
    """The panel role of a result: from its value set (concept extension `result-role`), with
    the lab's own label deciding between nil, mitogen and antigen tubes (a lab may file its nil
    tube on an antigen code)."""
    role = vs.role_of(code) if vs is not None and code is not None else None
    if role is None or role == TST_INDURATION:
        return role
    words = label.casefold()
    kit = "qft" if role.startswith("qft") else "tspot"
    if "mitogen" in words or "positive control" in words:
        return f"{kit}-mitogen" + ("-minus-nil" if kit == "qft" else "")
    if re.search(r"\bnil\b|negative control", words) and not re.search(r"minus|-\s*nil", words):
        return f"{kit}-nil"
    return role


@dataclass(frozen=True)
class Component:
    """One numeric part of a panel, with its role and value."""

    role: str
    value: float
    shown: str
    label: str


def read_components(components: list[Component]) -> Reading:
    """The manufacturer's rule over a panel's numeric parts (QuantiFERON-TB Gold Plus or
    T-SPOT.TB package insert); parts that do not allow it are indeterminate with their values."""
    shown = "; ".join(f"{c.label} {c.shown}" for c in components)
    values = {"components": shown}
    by_role: dict[str, list[float]] = {}
    for component in components:
        by_role.setdefault(component.role, []).append(component.value)
    if any(role.startswith("qft") for role in by_role):
        return _qft(by_role, shown, values)
    return _tspot(by_role, shown, values)


def _qft(by_role: dict[str, list[float]], shown: str, values: dict[str, str]) -> Reading:
    nil = max(by_role.get(QFT_NIL, []), default=None)
    antigens = by_role.get(QFT_ANTIGEN, [])
    mitogen = min(by_role.get(QFT_MITOGEN, []), default=None)
    if nil is None or not antigens:
        return Reading(Meaning.INDETERMINATE, "panel-incomplete", shown, values=values)
    cut = _policy("qft_antigen_minus_nil_milli_iu") / 1000
    share = _policy("qft_antigen_share_of_nil_percent") / 100
    if nil * 1000 > _policy("qft_nil_max_milli_iu"):
        return Reading(Meaning.INDETERMINATE, "qft-high-nil", shown, values=values)
    if any(a >= cut and a >= share * nil for a in antigens):
        return Reading(Meaning.POSITIVE, "qft-rule", shown, values=values)
    if mitogen is None:
        return Reading(Meaning.INDETERMINATE, "panel-incomplete", shown, values=values)
    if mitogen * 1000 < _policy("qft_mitogen_minus_nil_min_milli_iu"):
        return Reading(Meaning.INDETERMINATE, "qft-low-mitogen", shown, values=values)
    return Reading(Meaning.NEGATIVE, "qft-rule", shown, values=values)


def _tspot(by_role: dict[str, list[float]], shown: str, values: dict[str, str]) -> Reading:
    nil = max(by_role.get(TSPOT_NIL, []), default=None)
    panels = by_role.get(TSPOT_ANTIGEN, [])
    mitogen = min(by_role.get(TSPOT_MITOGEN, []), default=None)
    if nil is None or not panels:
        return Reading(Meaning.INDETERMINATE, "panel-incomplete", shown, values=values)
    if nil > _policy("tspot_nil_max_spots"):
        return Reading(Meaning.INDETERMINATE, "tspot-invalid", shown, values=values)
    response = max(panels) - nil
    if response >= _policy("tspot_positive_spots"):
        return Reading(Meaning.POSITIVE, "tspot-rule", shown, values=values)
    if response >= _policy("tspot_borderline_spots"):
        return Reading(Meaning.INDETERMINATE, "tspot-borderline", shown, values=values)
    if mitogen is None:
        return Reading(Meaning.INDETERMINATE, "panel-incomplete", shown, values=values)
    if mitogen < _policy("tspot_mitogen_min_spots"):
        return Reading(Meaning.INDETERMINATE, "tspot-invalid", shown, values=values)
    return Reading(Meaning.NEGATIVE, "tspot-rule", shown, values=values)


def component_of(part: Mapping[str, Any], vs: ValueSet | None) -> Component | None:
    """A numeric part (an Observation or an Observation.component) as a panel component."""
    concept = part.get("code")
    found = vs.matches_any(_safe_codings(concept)) if vs is not None else None
    label = (_concept_texts(concept) or [found[1] if found else ""])[0]
    role = role_of(found, label, vs) if found is not None else None
    quantity = part.get("valueQuantity")
    value = _number(quantity)
    if role not in COMPONENT_ROLES or value is None or not isinstance(quantity, dict):
        return None
    return Component(role, value, quantity_text(quantity), label or role)


# -- The reading ------------------------------------------------------------------------------


def read_result(
    observation: Mapping[str, Any], kind: Kind = Kind.QUALITATIVE, vs: ValueSet | None = None
) -> Reading:
    """What one result says, read in the grammar's order (see the module docstring)."""
    interpretations = observation.get("interpretation")
    if isinstance(interpretations, list):
        for concept in interpretations:
            found = _meaning_of_codes(_safe_codings(concept))
            if found is not None:
                return Reading(
                    found[0],
                    "interpretation",
                    _shown_answer(observation, concept),
                    (code_label(found[1]),),
                )
        for concept in interpretations:
            meaning = _text_meaning(_concept_texts(concept))
            if meaning is not None:
                return Reading(meaning, "interpretation-text", _shown_answer(observation, concept))
    concept = observation.get("valueCodeableConcept")
    if isinstance(concept, dict):
        found = _meaning_of_codes(_safe_codings(concept))
        if found is not None:
            return Reading(
                found[0], "coded-value", _answer_text(concept, found[1]), (code_label(found[1]),)
            )
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict):
        reading = _read_quantity(observation, quantity, kind, vs)
        if reading is not None:
            return reading
    texts = _concept_texts(concept)
    if isinstance(observation.get("valueString"), str):
        texts.append(observation["valueString"])
    meaning = _text_meaning(texts)
    if meaning is not None:
        return Reading(meaning, "text", "; ".join(t for t in texts if t.strip()))
    parts = observation.get("component")
    if isinstance(parts, list) and vs is not None:
        components = [c for p in parts if isinstance(p, dict) for c in [component_of(p, vs)] if c]
        if components:
            return read_components(components)
    if isinstance(quantity, dict):
        return Reading(Meaning.INDETERMINATE, "number-without-reading", quantity_text(quantity))
    return NOTHING


def _read_quantity(
    observation: Mapping[str, Any], quantity: Mapping[str, Any], kind: Kind, vs: ValueSet | None
) -> Reading | None:
    if kind is Kind.HCG:
        return _read_hcg(quantity)
    if kind is Kind.NUCLEIC_ACID:
        return _read_viral_load(observation, quantity)
    code = vs.matches_any(_safe_codings(observation.get("code"))) if vs is not None else None
    role = vs.role_of(code) if vs is not None and code is not None else None
    if role == TST_INDURATION:
        return _read_tst(quantity)
    if role in COMPONENT_ROLES:
        return None  # read with its panel (rules/labs.py), never on its own
    return _read_against_range(observation, quantity)


def _answer_text(concept: Mapping[str, Any], code: Code) -> str:
    texts = _concept_texts(concept)
    if texts:
        return texts[0]
    for vs_id in (POSITIVE_VS, NEGATIVE_VS, INDETERMINATE_VS):
        vs = value_set(vs_id)
        if code in vs:
            return vs.display(code)
    return code[1]  # pragma: no cover - code came from one of these value sets


def _shown_answer(observation: Mapping[str, Any], interpretation: Any) -> str:
    """The value beside the lab's interpretation: the quantity if any, else the answer."""
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict) and _number(quantity) is not None:
        return quantity_text(quantity)
    for source in (observation.get("valueCodeableConcept"), interpretation):
        texts = _concept_texts(source)
        if texts:
            return texts[0]
    codes = _safe_codings(interpretation)
    found = _meaning_of_codes(codes)
    return _answer_text({}, found[1]) if found else ""


KIND_OF_VALUE_SET = {
    "pregnancy-test-loinc": Kind.HCG,
    "hiv-rna-loinc": Kind.NUCLEIC_ACID,
    "hcv-rna-loinc": Kind.NUCLEIC_ACID,
}
"""Value sets whose quantities have their own reading (step 3); others are QUALITATIVE."""
