"""A site's FHIR terminology server (optional, CDS_TERMINOLOGY_URL): is a code that no local
value set lists a member of one anyway?

SNOMED CT has no open distribution, so a value set's hierarchy cannot be evaluated here: its file
lists the codes gathered from public expansions and names its roots as `is-a` filters
(compose.include[].filter, op `is-a`, property `concept`). A record's Condition codes that no
local value set lists are asked about, before evaluation, with

    GET <base>/CodeSystem/$subsumes?system=<system>&codeA=<root>&codeB=<code>

for each root of each value set in the code's system; outcome `subsumes` or `equivalent` makes
the code a member. `$subsumes` rather than `ValueSet/$validate-code`: it needs nothing but the code
system on the server (our value sets' canonical URLs are unknown to it, and POSTing each ValueSet
would send the value set with every question), every SNOMED CT server answers it (Ontoserver,
Snowstorm, HAPI, tx.fhir.org), and its answer depends only on (system, root, code), so one cache
entry serves every value set with that root and survives edits to the value-set files.

Bounded on every side: one deadline per hook call (CDS_TERMINOLOGY_DEADLINE_SECONDS, never past
CDS_FHIR_DEADLINE_SECONDS after the call started), each GET bounded by `deadline_fetch.fetch`
(a watchdog ends a server that hangs or trickles), at most MAX_QUESTIONS questions a call, a
per-process cache (bounded, with a TTL; "not a member" is cached too). A question that fails,
times out or gets an answer that is not a $subsumes Parameters gets the local answer (not a
member), is logged and counted (`cds_terminology_lookups_total`). Without CDS_TERMINOLOGY_URL no
TerminologyServer exists and no code leaves the process.

Only codes are sent (system, root, code): never a patient identifier, date or text.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urlencode

import orjson

from .config import Settings
from .deadline_fetch import FetchFailed, fetch
from .domain.fhirdata import Code
from .domain.record import PatientRecord
from .domain.terminology import ValueSet, all_value_sets
from .fhir.client import UrlRefused, parse_location
from .observability import TERMINOLOGY_LOOKUPS

log = logging.getLogger(__name__)

ASKED_TYPES = ("Condition",)
"""Resource types whose codes are asked about: the condition value sets are the ones with
SNOMED CT roots, and a Condition's code is what a problem list codes most specifically."""
MEMBER_OUTCOMES = frozenset({"subsumes", "equivalent"})
"""$subsumes outcomes (codeA = root, codeB = the code) that make the code a member."""
NOT_MEMBER_OUTCOMES = frozenset({"subsumed-by", "not-subsumed"})
MAX_QUESTIONS = 200
"""At most this many questions a hook call (a long problem list on a cold cache); the rest keep
the local answer and are asked on a later call."""
WORKERS = 8
"""Questions asked at the same time."""
CACHE_ENTRIES = 50_000
"""Answers kept per process (least recently used dropped first): about 10 MB at most."""
MAX_ANSWER_BYTES = 64 * 1024

Question = tuple[str, str, str]
"""(system, root code, code): is `code` a kind of `root`?"""
Members = dict[str, dict[Code, Code]]
"""{value set id: {code: root}}: what PatientRecord.extra_members holds."""


class AnswerCache:
    """Answers by question, per process: at most `max_entries`, each for `ttl_seconds`."""

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._entries: OrderedDict[Question, tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, question: Question) -> bool | None:
        """The cached answer (True: member), or None when not cached or expired."""
        with self._lock:
            entry = self._entries.get(question)
            if entry is None:
                return None
            stored_at, member = entry
            if self.clock() - stored_at >= self.ttl_seconds:
                del self._entries[question]
                return None
            self._entries.move_to_end(question)
            return member

    def put(self, question: Question, member: bool) -> None:
        with self._lock:
            self._entries[question] = (self.clock(), member)
            self._entries.move_to_end(question)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class BadAnswer(Exception):
    """The server's answer is not a $subsumes Parameters with a known outcome."""


def subsumes_outcome(body: bytes) -> bool:
    """True when a $subsumes answer makes codeB a member under codeA; BadAnswer otherwise
    unreadable."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadAnswer("not JSON") from None
    if not isinstance(doc, dict) or doc.get("resourceType") != "Parameters":
        raise BadAnswer("not a Parameters resource")
    parameters = doc.get("parameter")
    outcomes = [
        p.get("valueCode")
        for p in (parameters if isinstance(parameters, list) else [])
        if isinstance(p, dict) and p.get("name") == "outcome"
    ]
    if len(outcomes) != 1 or outcomes[0] not in MEMBER_OUTCOMES | NOT_MEMBER_OUTCOMES:
        raise BadAnswer("no single known outcome")
    return outcomes[0] in MEMBER_OUTCOMES


@dataclass
class Lookup:
    """What one hook call's questions came to (for the log line and tests)."""

    members: Members = field(default_factory=dict)
    asked: int = 0
    cached: int = 0
    failed: dict[Question, str] = field(default_factory=dict)
    unfinished: int = 0
    skipped: int = 0
    """Questions past MAX_QUESTIONS, not asked."""


class TerminologyServer:
    """The client of one site's terminology server, shared by all hook calls of a process."""

    def __init__(
        self,
        settings: Settings,
        value_sets: Mapping[str, ValueSet] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`value_sets` replaces the shipped ones (tests); the URL must be https, or http for a
        host in http_allowed_hosts (ValueError otherwise)."""
        base = settings.terminology_url.rstrip("/")
        try:
            location = parse_location(base)
        except UrlRefused as exc:
            raise ValueError(f"CDS_TERMINOLOGY_URL {exc}") from None
        if location.scheme != "https" and location.host not in {
            h.lower() for h in settings.http_allowed_hosts
        }:
            raise ValueError("CDS_TERMINOLOGY_URL is not https (and its host is not allowed http)")
        if location.has_query:
            raise ValueError("CDS_TERMINOLOGY_URL has a query or fragment")
        self.base_url = base
        self.deadline_seconds = settings.terminology_deadline_seconds
        self.hook_budget_seconds = settings.fhir_deadline_seconds
        self.value_sets = dict(all_value_sets() if value_sets is None else value_sets)
        self.rooted = {vs_id: vs for vs_id, vs in self.value_sets.items() if vs.roots}
        self.cache = AnswerCache(CACHE_ENTRIES, settings.terminology_cache_seconds, clock)

    def unknown_codes(self, record: PatientRecord) -> list[Code]:
        """The record's codes (ASKED_TYPES) that no local value set lists, in a system some
        value set has roots in; sorted, so the questions a call asks never depend on order."""
        systems = {system for vs in self.rooted.values() for system, _ in vs.roots}
        return sorted(
            {
                code
                for (rtype, code) in record.by_code
                if rtype in ASKED_TYPES
                and code[0] in systems
                and not any(code in vs for vs in self.value_sets.values())
            }
        )

    def questions(self, codes: list[Code]) -> list[Question]:
        return sorted(
            {
                (system, root, code)
                for system, code in codes
                for vs in self.rooted.values()
                for root_system, root in vs.roots
                if root_system == system
            }
        )

    def url(self, question: Question) -> str:
        system, root, code = question
        query = urlencode({"system": system, "codeA": root, "codeB": code})
        return f"{self.base_url}/CodeSystem/$subsumes?{query}"

    def _ask(self, question: Question, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed("deadline")
        body = fetch(self.url(question), remaining, MAX_ANSWER_BYTES, "application/fhir+json")
        return subsumes_outcome(body)

    def lookup(self, record: PatientRecord, started: float | None = None) -> Lookup:
        """Ask about the record's unknown codes within the deadline; `started` is when the hook
        call started (time.monotonic), so the questions end within its budget too."""
        now = time.monotonic()
        deadline = now + self.deadline_seconds
        if started is not None:
            deadline = min(deadline, started + self.hook_budget_seconds)
        result = Lookup()
        answers: dict[Question, bool] = {}
        to_ask: list[Question] = []
        for question in self.questions(self.unknown_codes(record)):
            cached = self.cache.get(question)
            if cached is None:
                to_ask.append(question)
            else:
                answers[question] = cached
                result.cached += 1
        TERMINOLOGY_LOOKUPS.labels(outcome="cached").inc(result.cached)
        if len(to_ask) > MAX_QUESTIONS:
            result.skipped = len(to_ask) - MAX_QUESTIONS
            to_ask = to_ask[:MAX_QUESTIONS]
        if to_ask and deadline <= time.monotonic():  # the hook's budget is spent already
            result.unfinished = len(to_ask)
            TERMINOLOGY_LOOKUPS.labels(outcome="unfinished").inc(len(to_ask))
        elif to_ask:
            self._ask_all(to_ask, deadline, answers, result)
        for vs_id, vs in self.rooted.items():
            for (system, root, code), member in answers.items():
                if member and (system, root) in vs.roots:
                    result.members.setdefault(vs_id, {}).setdefault((system, code), (system, root))
        if result.failed or result.unfinished or result.skipped:
            reasons = sorted(set(result.failed.values()))
            log.warning(
                "terminology server: %d of %d questions failed (%s), %d unfinished at the "
                "deadline of %g s, %d not asked (over %d): the local value sets answer for them",
                len(result.failed),
                len(to_ask) + result.skipped,
                ", ".join(reasons) or "none",
                result.unfinished,
                self.deadline_seconds,
                result.skipped,
                MAX_QUESTIONS,
            )
        return result

    def _ask_all(
        self,
        to_ask: list[Question],
        deadline: float,
        answers: dict[Question, bool],
        result: Lookup,
    ) -> None:
        pool = ThreadPoolExecutor(
            max_workers=min(WORKERS, len(to_ask)), thread_name_prefix="terminology"
        )
        try:
            futures: dict[Future[bool], Question] = {
                pool.submit(self._ask, question, deadline): question for question in to_ask
            }
            done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        finally:
            # Never wait for stragglers: each GET is bounded by the same deadline.
            pool.shutdown(wait=False, cancel_futures=True)
        for future, question in futures.items():
            if future not in done:
                result.unfinished += 1
                TERMINOLOGY_LOOKUPS.labels(outcome="unfinished").inc()
                continue
            exc = future.exception()
            if exc is None:
                member = future.result()
                answers[question] = member
                self.cache.put(question, member)
                result.asked += 1
                TERMINOLOGY_LOOKUPS.labels(outcome="member" if member else "not-member").inc()
            else:
                reason = str(exc) if isinstance(exc, FetchFailed | BadAnswer) else "internal error"
                if reason == "deadline":
                    result.unfinished += 1
                    TERMINOLOGY_LOOKUPS.labels(outcome="unfinished").inc()
                    continue
                result.failed[question] = reason
                TERMINOLOGY_LOOKUPS.labels(outcome="failed").inc()

    def __call__(self, record: PatientRecord, started: float | None = None) -> Members:
        """The extra memberships for PatientRecord.extra_members."""
        return self.lookup(record, started).members


def terminology_server(
    settings: Settings, value_sets: Mapping[str, ValueSet] | None = None
) -> TerminologyServer | None:
    """The site's terminology server, or None when CDS_TERMINOLOGY_URL is not set (then nothing
    is ever asked) or unusable (logged: the local value sets answer alone)."""
    if not settings.terminology_url:
        return None
    try:
        return TerminologyServer(settings, value_sets)
    except ValueError as exc:
        log.error("%s: no terminology server is asked", exc)
        return None
