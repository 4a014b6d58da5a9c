"""What a rule concludes: a Finding with status, severity, evidence and what to order next."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from .record import Unreadable


class Status(Enum):
    MET = "met"
    NOT_MET = "not met"
    UNKNOWN = "unknown"


class Severity(IntEnum):
    """Card indicators, ordered by urgency."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def indicator(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Evidence:
    """One line of evidence as data: `kind` names its sentence in cds_service/wording.toml
    ([evidence] table) and `facts` fill it (the resource, the code, the date). `text` is the
    line itself, empty until cards.worded writes it. A fact may be a tuple of Evidence: its parts,
    each worded by its own kind and joined with '; '."""

    kind: str
    facts: Mapping[str, str | int | tuple[Evidence, ...]] = field(default_factory=dict, hash=False)
    text: str = ""


@dataclass(frozen=True)
class Suggestion:
    """Something to order that would close the gap: a lab test or a medication.

    `kind` is 'lab' (ServiceRequest) or 'medication' (MedicationRequest); `code` is (system, code).
    `details` carries dose/route/timing for medications. The cards layer turns it into FHIR.
    `wording` names its label, reason (and dosage text) in cds_service/wording.toml
    ([suggestion.<wording>]), filled with `facts`; `label` is empty until cards.worded writes it.
    """

    key: str
    label: str
    kind: str
    code: tuple[str, str]
    display: str
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    wording: str = ""
    facts: Mapping[str, str | int] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Finding:
    """The outcome of one rule for one order."""

    topic: str
    status: Status
    severity: Severity
    headline: str = ""
    """One sentence (< 140 characters) stating the finding; the card summary. Empty when the
    finding has a `reason`: cds_service/wording.toml then words it (cards.worded)."""
    explanation: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    """What was found, each naming the resource, the code and the date (worded by cards)."""
    unreadable: tuple[Unreadable, ...] = ()
    suggestions: tuple[Suggestion, ...] = ()
    reason: str = ""
    """Why the check concluded this, as a code: with the topic, the key of its sentences in
    cds_service/wording.toml."""
    facts: Mapping[str, str | int | tuple[Evidence, ...]] = field(
        default_factory=dict, hash=False, compare=False
    )
    """Named values the sentences of `reason` fill in (policy numbers are filled from policy);
    evidence parts are worded and joined with '; ', as in Evidence facts."""

    @property
    def to_confirm(self) -> bool:
        """An item to confirm that needs no card of its own: not met at info severity (the
        current conditions no check assessed). The summary's checklist row shows it."""
        return self.status is Status.NOT_MET and self.severity is Severity.INFO

    @property
    def shown(self) -> bool:
        """Whether the finding gets a card of its own: anything but met, except an item to
        confirm (`to_confirm`)."""
        return self.status is not Status.MET and not self.to_confirm
