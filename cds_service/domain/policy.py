"""The clinical numbers, read once from policy.toml, each with its unit and citation."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from types import MappingProxyType

NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)


@dataclass(frozen=True)
class Number:
    """A policy number with the unit it is in and the source that fixes it."""

    key: str
    value: int
    unit: str
    source: str
    citation: str


@dataclass(frozen=True)
class Source:
    key: str
    title: str
    url: str


@dataclass(frozen=True)
class Policy:
    numbers: dict[str, Number]
    sources: dict[str, Source]

    def __getitem__(self, key: str) -> int:
        return self.numbers[key].value

    def placeholders(self) -> Mapping[str, int | str]:
        """Named numbers for wording templates: each key, plus `<key>_weeks` and `<key>_months`
        (whole weeks, 30-day months) for numbers in days, and `<key>_in_words` ("two") for
        numbers up to twelve, as a sentence spells them. Built once per policy (read-only): every
        sentence of every card reads it."""
        return self._placeholders

    @cached_property
    def _placeholders(self) -> Mapping[str, int | str]:
        out: dict[str, int | str] = {key: number.value for key, number in self.numbers.items()}
        for key, number in self.numbers.items():
            if 0 <= number.value < len(NUMBER_WORDS):
                out[f"{key}_in_words"] = NUMBER_WORDS[number.value]
        for key, number in self.numbers.items():
            if number.unit == "days":
                out[f"{key}_weeks"] = number.value // 7
                out[f"{key}_months"] = number.value // 30
        return MappingProxyType(out)

    def cite(self, key: str) -> str:
        number = self.numbers[key]
        return f"{number.value} {number.unit}: {number.citation}"


def parse_policy(text: str) -> Policy:
    doc = tomllib.loads(text)
    sources = {k: Source(k, v["title"], v["url"]) for k, v in doc["sources"].items()}
    numbers = {
        k: Number(k, int(v["value"]), v["unit"], v["source"], v["citation"])
        for k, v in doc["numbers"].items()
    }
    for number in numbers.values():
        if number.source not in sources:
            raise ValueError(f"policy number {number.key} cites unknown source {number.source}")
    return Policy(numbers, sources)


@cache
def load_policy() -> Policy:
    """The packaged policy (read once per process)."""
    text = (resources.files("cds_service") / "domain" / "policy.toml").read_text(encoding="utf-8")
    return parse_policy(text)
