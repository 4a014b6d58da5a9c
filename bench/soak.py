"""Soak: minutes of bounded load under gunicorn; zero errors and flat resident memory (issue 6).

Starts `cds-service serve --no-auth --workers 2` on a free 127.0.0.1 port with its own temporary
SQLite database and PROMETHEUS_MULTIPROC_DIR, waits until it is ready, primes it (every request
body below is sent twice), then drives closed-loop load over 8 connections (each sends its next
request when the previous one is answered) for a warm-up and then for the measured duration.

The mix is weighted like an EHR's: most order-select/order-sign calls are for other drugs;
alemtuzumab orders come from eligible, ineligible and missing-evidence scenario fixtures at both
hooks; feedback is posted for cards just returned; some discovery GETs; a small share of bad
requests (invalid or truncated JSON, wrong hook, invalid feedback) that must answer 400. Every
request carries a fresh hookInstance (uuid4).

Errors: any status other than the one expected for the kind of request (so any 5xx), a 200 whose
body is not the expected JSON, connection errors and client timeouts; warm-up and priming count.
Memory: VmRSS of the gunicorn master and each worker, sampled every few seconds; the growth is from
the end of the warm-up to the end of the run, for the total and each process, and the verdict uses
the worst of them. A worker replaced during the run (its pid changed) is reported and fails it.
At the end `GET /metrics` is saved next to the report and its `cds_` lines are excerpted.

Run `make soak` (5 minutes) or e.g. `python bench/soak.py --duration 40 --warmup 10`.
Exit code 0 when both targets are met, 1 otherwise. A benchmark, not a test: it asserts no time.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench import OTHER_DRUG, free_port, load  # noqa: E402

CONNECTIONS = 8
CLIENT_TIMEOUT = 10.0
RSS_TARGET_PERCENT = 10.0
SELECT, SIGN = "lemtrada-order-select", "lemtrada-order-sign"

# Scenario fixtures (fhir_fixtures/requests) by outcome. order-select fixtures are also sent at
# order-sign (selections dropped), so every outcome is seen at both hooks.
SCENARIOS: dict[str, list[str]] = {
    "eligible": [
        "eligible_patient_at_order_select",
        "eligible_adult_man_needs_no_pregnancy_test",
        "eligible_patient_at_order_sign",
        "eligible_man_with_large_record_at_order_sign",
        "order_sign_with_premedication_and_prophylaxis",
    ],
    "ineligible": [
        "hiv_test_positive",
        "active_tuberculosis_condition_is_a_hard_stop",
        "positive_pregnancy_test_is_a_hard_stop",
        "allergy_to_lemtrada_is_a_hard_stop",
        "primary_progressive_ms_is_not_indicated",
        "hcv_rna_detected",
        "live_vaccine_three_weeks_before_start",
    ],
    "missing-evidence": [
        "baseline_labs_missing",
        "tb_screening_missing",
        "hepatitis_b_screening_missing",
        "vzv_status_unknown",
        "woman_of_reproductive_age_without_pregnancy_test",
        "unreadable_hiv_result",
        "order_sign_without_premedication_or_prophylaxis",
    ],
}
"""Records an other-drug order is placed on (besides the other-drug fixtures themselves)."""
OTHER_DRUG_RECORDS = [
    "eligible_patient_at_order_select",
    "hiv_test_positive",
    "baseline_labs_missing",
    "eligible_man_with_large_record_at_order_sign",
    "vzv_status_unknown",
]

OTHER = "other drug"
ALEM_SELECT = "alemtuzumab order-select"
ALEM_SIGN = "alemtuzumab order-sign"
FEEDBACK = "feedback"
DISCOVERY = "discovery"
BAD = "bad request (400)"
KINDS = [OTHER, ALEM_SELECT, ALEM_SIGN, FEEDBACK, DISCOVERY, BAD]
MIX = {OTHER: 0.70, ALEM_SELECT: 0.08, ALEM_SIGN: 0.08, FEEDBACK: 0.05, DISCOVERY: 0.05, BAD: 0.04}
CARD_KINDS = (OTHER, ALEM_SELECT, ALEM_SIGN)


# -- request bodies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """A hook request serialised once, split at its hookInstance so each send gets a fresh one."""

    kind: str
    name: str
    path: str
    prefix: bytes
    suffix: bytes
    patient_id: bytes

    @classmethod
    def of(cls, kind: str, name: str, doc: dict[str, Any]) -> Body:
        raw = orjson.dumps(doc)
        marker = orjson.dumps(doc["hookInstance"])
        if raw.count(marker) != 1:
            raise ValueError(f"{name}: hookInstance is not unique in the body")
        prefix, suffix = raw.split(marker)
        service = SELECT if doc["hook"] == "order-select" else SIGN
        return cls(
            kind,
            name,
            f"/cds-services/{service}",
            prefix,
            suffix,
            str(doc["context"]["patientId"]).encode(),
        )

    def render(self, fresh_patient: bool = False) -> bytes:
        body = self.prefix + b'"' + str(uuid.uuid4()).encode() + b'"' + self.suffix
        if fresh_patient:  # the same record under a new patient id: every resource's JSON differs
            body = body.replace(self.patient_id, str(uuid.uuid4()).encode())
        return body


def as_order_sign(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["hook"] = "order-sign"
    out["context"].pop("selections", None)
    return out


def other_drug_on(doc: dict[str, Any], other: dict[str, Any], hook: str) -> dict[str, Any]:
    """The other-drug order of `other`, drafted for the patient of `doc` (their whole record)."""
    out = copy.deepcopy(doc)
    order = copy.deepcopy(other["context"]["draftOrders"]["entry"][0]["resource"])
    patient = doc["context"]["patientId"]
    order["subject"] = {"reference": f"Patient/{patient}"}
    out["hook"] = hook
    context = {k: v for k, v in out["context"].items() if k not in ("selections", "draftOrders")}
    context["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": order}],
    }
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{order['id']}"]
    out["context"] = context
    return out


def build_bodies() -> dict[str, list[Body]]:
    other = load(OTHER_DRUG)
    pools: dict[str, list[Body]] = {OTHER: [], ALEM_SELECT: [], ALEM_SIGN: []}
    pools[OTHER].append(Body.of(OTHER, OTHER_DRUG, other))
    pools[OTHER].append(
        Body.of(
            OTHER,
            "alemtuzumab_drafted_but_not_selected",
            load("alemtuzumab_drafted_but_not_selected"),
        )
    )
    for name in OTHER_DRUG_RECORDS:
        for hook in ("order-select", "order-sign"):
            pools[OTHER].append(
                Body.of(
                    OTHER,
                    f"{OTHER_DRUG} on {name} ({hook})",
                    other_drug_on(load(name), other, hook),
                )
            )
    for outcome, names in SCENARIOS.items():
        for name in names:
            doc = load(name)
            if doc["hook"] == "order-select":
                pools[ALEM_SELECT].append(Body.of(ALEM_SELECT, f"{outcome}: {name}", doc))
                doc = as_order_sign(doc)
            pools[ALEM_SIGN].append(Body.of(ALEM_SIGN, f"{outcome}: {name}", doc))
    return pools


def bad_requests(pools: dict[str, list[Body]]) -> list[tuple[str, str, bytes]]:
    """(name, path, body): each must answer 400 with an OperationOutcome."""
    sign = pools[ALEM_SIGN][0].render()
    return [
        ("truncated JSON", f"/cds-services/{SELECT}", pools[OTHER][0].render()[:4000]),
        ("invalid JSON", f"/cds-services/{SIGN}", b'{"hook": "order-sign", "context": {,}'),
        ("invalid UTF-8", f"/cds-services/{SELECT}", b'{"hook": "order-select\xff\xfe"}'),
        ("wrong hook for the service", f"/cds-services/{SELECT}", sign),
        (
            "invalid feedback",
            f"/cds-services/{SELECT}/feedback",
            orjson.dumps({"feedback": [{"card": "not-a-uuid", "outcome": "maybe"}]}),
        ),
    ]


def feedback_body(card: dict[str, Any], rng: random.Random) -> bytes:
    when = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    suggestions = [s["uuid"] for s in card.get("suggestions", []) if s.get("uuid")]
    if suggestions and rng.random() < 0.5:
        item = {
            "card": card["uuid"],
            "outcome": "accepted",
            "outcomeTimestamp": when,
            "acceptedSuggestions": [{"id": rng.choice(suggestions)}],
        }
    else:
        item = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": when,
            "overrideReason": {
                "reason": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                    "code": "MEDPREC",
                    "display": "medical precaution",
                },
                "userComment": "benefit outweighs the risk",
            },
        }
    return orjson.dumps({"feedback": [item]})


# -- the server --------------------------------------------------------------------------------


def start_server(port: int, workdir: Path, workers: int) -> tuple[subprocess.Popen[bytes], Path]:
    prom = workdir / "prometheus"
    prom.mkdir()
    env = {
        **os.environ,
        "CDS_DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
    }
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "cds-service"),
                "serve",
                "--no-auth",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # Ctrl-C reaches this script only; it stops the server itself
    return proc, log


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> str:
    """Poll /readyz until 200; when it does not exist (404), the discovery endpoint instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} while starting")
        try:
            status, _ = get(port, "/readyz", timeout=2)
            if status == 200:
                return "/readyz"
            if status == 404 and get(port, "/cds-services", timeout=2)[0] == 200:
                return "/cds-services (no /readyz)"
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} was not ready within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen[bytes], workers: set[int], timeout: float = 20.0) -> None:
    """SIGTERM the master by pid and wait; after the timeout SIGKILL it and any worker left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for pid in workers:
        try:
            if _ppid(pid) in (proc.pid, 1):  # still ours (orphaned workers are re-parented)
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# -- resident memory ---------------------------------------------------------------------------


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    try:
        found: set[int] = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.update(int(c) for c in (task / "children").read_text().split())
        return sorted(found)
    except OSError:  # no /proc/*/task/*/children on this kernel: scan for the parent pid
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if _ppid(int(entry.name)) == pid:
                        out.append(int(entry.name))
                except (OSError, IndexError, ValueError):
                    pass
        return sorted(out)


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) in kB, or None when the process is gone."""
    try:
        fields = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":" in line
        )
        return int(fields["VmRSS"].split()[0]), int(fields.get("RssAnon", "0 kB").split()[0])
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class Sample:
    t: float
    phase: str
    rss: dict[int, tuple[int, int]]
    """pid -> (VmRSS kB, RssAnon kB); the master first."""


class Sampler:
    def __init__(self, master: int) -> None:
        self.master = master
        self.samples: list[Sample] = []
        self.workers_seen: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, phase: str) -> Sample:
        rss: dict[int, tuple[int, int]] = {}
        for pid in [self.master, *children(self.master)]:
            if pid != self.master and pid not in self.workers_seen:
                self.workers_seen.append(pid)
            m = memory_kb(pid)
            if m is not None:
                rss[pid] = m
        s = Sample(time.monotonic(), phase, rss)
        self.samples.append(s)
        return s

    def start(self, interval: float, phase: list[str]) -> None:
        def run() -> None:
            while not self._stop.wait(interval):
                self.sample(phase[0])

        self._thread = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# -- load --------------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(phase, kind) -> seconds"""
    errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(phase, kind, error type) -> count"""
    examples: list[str] = field(default_factory=list)

    def merge(self, other: Stats) -> None:
        for key, values in other.latencies.items():
            self.latencies.setdefault(key, []).extend(values)
        self.errors.update(other.errors)
        self.examples.extend(other.examples[: max(0, 10 - len(self.examples))])


class Load:
    def __init__(
        self, port: int, pools: dict[str, list[Body]], fresh_patients: float, seed: int
    ) -> None:
        self.port = port
        self.pools = pools
        self.bad = bad_requests(pools)
        self.fresh_patients = fresh_patients
        self.seed = seed
        self.phase = ["prime"]
        self.stop = threading.Event()
        self.stats: list[Stats] = []

    def send(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def one(
        self,
        conn: http.client.HTTPConnection,
        stats: Stats,
        kind: str,
        rng: random.Random,
        recent: deque[tuple[str, dict[str, Any]]],
        body_choice: Body | None = None,
    ) -> http.client.HTTPConnection:
        """Send one request of a kind; record its latency or error. Returns the connection to use
        next (a new one after a connection error or a timeout)."""
        phase = self.phase[0]
        if kind == FEEDBACK and not recent:
            kind = ALEM_SELECT
        method, expected, path, body, label = "POST", 200, "", None, kind
        if kind in CARD_KINDS:
            chosen = body_choice or rng.choice(self.pools[kind])
            path = chosen.path
            body = chosen.render(fresh_patient=kind != OTHER and rng.random() < self.fresh_patients)
        elif kind == FEEDBACK:
            service, card = recent.popleft()
            path, body = f"/cds-services/{service}/feedback", feedback_body(card, rng)
        elif kind == DISCOVERY:
            method, path = "GET", "/cds-services"
        else:
            label, path, body = rng.choice(self.bad)
            expected = 400
        start = time.perf_counter()
        error = None
        try:
            status, data = self.send(conn, method, path, body)
        except TimeoutError:
            error = "client timeout"
        except (OSError, http.client.HTTPException) as exc:
            error = f"connection: {type(exc).__name__}"
        elapsed = time.perf_counter() - start
        if error is None:
            if status != expected:
                error = f"status {status}"
            elif kind in CARD_KINDS or kind == FEEDBACK:
                try:
                    doc = orjson.loads(data)
                    cards = doc["cards"] if kind != FEEDBACK else []
                    if kind != FEEDBACK and not isinstance(cards, list):
                        raise TypeError("cards")
                    if kind == OTHER and cards:
                        error = "cards for another drug"
                    elif kind in (ALEM_SELECT, ALEM_SIGN) and not cards:
                        error = "no cards for alemtuzumab"
                    for card in cards:
                        if isinstance(card, dict) and card.get("uuid"):
                            recent.append((path.rsplit("/", 1)[1], card))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    error = "unexpected body"
        if error is None:
            stats.latencies.setdefault((phase, kind), []).append(elapsed)
            return conn
        stats.errors[(phase, kind, error)] += 1
        if len(stats.examples) < 10:
            answered = error.startswith(("status", "unexpected", "no cards", "cards"))
            detail = data[:300].decode("utf-8", "replace") if answered else ""
            stats.examples.append(f"[{phase}] {label} {method} {path}: {error} {detail}".rstrip())
        if error.startswith(("connection", "client timeout")):
            conn.close()
            time.sleep(0.05)  # a dead server must not turn the loop into a busy spin
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
        return conn

    def prime(self) -> None:
        """Every body twice over the connections, so both workers import and cache what they need
        before the warm-up (a worker's first alemtuzumab request loads models and value sets)."""
        todo = deque(b for pool in self.pools.values() for b in pool for _ in range(2))
        lock = threading.Lock()

        def run(i: int) -> None:
            stats, rng, recent = Stats(), random.Random(self.seed * 7919 + i), deque(maxlen=64)
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
            while True:
                with lock:
                    if not todo:
                        break
                    body = todo.popleft()
                conn = self.one(conn, stats, body.kind, rng, recent, body)
            for _ in range(2):
                conn = self.one(conn, stats, FEEDBACK, rng, recent)
            for _ in range(len(self.bad)):
                conn = self.one(conn, stats, BAD, rng, recent)
            conn.close()
            with lock:
                self.stats.append(stats)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def start(self) -> list[threading.Thread]:
        kinds, weights = list(MIX), list(MIX.values())
        lock = threading.Lock()

        def run(i: int) -> None:
            stats, rng, recent = Stats(), random.Random(self.seed * 104729 + i), deque(maxlen=64)
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
            while not self.stop.is_set():  # closed loop: the next request when this one answered
                conn = self.one(conn, stats, rng.choices(kinds, weights)[0], rng, recent)
            conn.close()
            with lock:
                self.stats.append(stats)

        threads = [
            threading.Thread(target=run, args=(i,), name=f"conn-{i}") for i in range(CONNECTIONS)
        ]
        for t in threads:
            t.start()
        return threads

    def merged(self) -> Stats:
        out = Stats()
        for s in self.stats:
            out.merge(s)
        return out


# -- report ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1e3


def aligned(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def growth(start: int, end: int) -> float:
    return 100.0 * (end - start) / start if start else 0.0


def memory_report(
    sampler: Sampler, warm: Sample, end: Sample
) -> tuple[list[dict[str, Any]], list[int]]:
    """Per process and total: RSS after warm-up, at the end, the peak and the growth."""
    master = sampler.master
    workers_warm = [p for p in warm.rss if p != master]
    replaced = [p for p in sampler.workers_seen if p not in end.rss or p not in warm.rss]
    rows = []
    common = [p for p in warm.rss if p in end.rss]
    for pid in common:
        role = "master" if pid == master else f"worker {workers_warm.index(pid) + 1}"
        peak = max(s.rss[pid][0] for s in sampler.samples if pid in s.rss and s.t >= warm.t)
        rows.append(
            {
                "process": role,
                "pid": pid,
                "rss_warm_kb": warm.rss[pid][0],
                "rss_end_kb": end.rss[pid][0],
                "rss_peak_kb": peak,
                "growth_percent": growth(warm.rss[pid][0], end.rss[pid][0]),
                "anon_warm_kb": warm.rss[pid][1],
                "anon_end_kb": end.rss[pid][1],
                "anon_growth_percent": growth(warm.rss[pid][1], end.rss[pid][1]),
            }
        )
    tw, te = sum(warm.rss[p][0] for p in warm.rss), sum(end.rss[p][0] for p in end.rss)
    aw, ae = sum(warm.rss[p][1] for p in warm.rss), sum(end.rss[p][1] for p in end.rss)
    peak_total = max(sum(v[0] for v in s.rss.values()) for s in sampler.samples if s.t >= warm.t)
    rows.append(
        {
            "process": "total",
            "pid": None,
            "rss_warm_kb": tw,
            "rss_end_kb": te,
            "rss_peak_kb": peak_total,
            "growth_percent": growth(tw, te),
            "anon_warm_kb": aw,
            "anon_end_kb": ae,
            "anon_growth_percent": growth(aw, ae),
        }
    )
    return rows, replaced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds (300)")
    parser.add_argument("--warmup", type=float, default=30.0, help="warm-up seconds (30)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-every", type=float, default=2.0, help="RSS sampling interval (s)")
    parser.add_argument(
        "--fresh-patients",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of alemtuzumab requests sent under a new patient id, so "
        "every resource is new to the service (cold validation, caches filling); "
        "default 0",
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="write the figures as JSON; the /metrics output and the server log go next to it",
    )
    args = parser.parse_args()

    stem = args.json.with_suffix("") if args.json else ROOT / "var" / "soak"
    metrics_path = stem.with_name(stem.name + ".metrics.txt")
    log_copy = stem.with_name(stem.name + ".server.log")
    pools = build_bodies()
    workdir = Path(tempfile.mkdtemp(prefix="cds-soak-"))
    port = free_port()
    proc, log = start_server(port, workdir, args.workers)
    sampler = Sampler(proc.pid)
    load_ = Load(port, pools, args.fresh_patients, args.seed)
    metrics_text: str | None = None
    metrics_status: int | str = "not fetched"
    try:
        try:
            ready_by = wait_ready(proc, port)
        except RuntimeError:
            stop_server(proc, set(children(proc.pid)) if proc.poll() is None else set())
            sys.stderr.write(log.read_text(errors="replace")[-3000:])
            raise
        sampler.sample("start")
        prime_start = time.monotonic()
        load_.prime()
        prime_seconds = time.monotonic() - prime_start
        load_.phase[0] = "warmup"
        sampler.sample("warmup")
        sampler.start(args.sample_every, load_.phase)
        threads = load_.start()
        time.sleep(args.warmup)
        warm = sampler.sample("warm")
        load_.phase[0] = "measure"
        measure_start = time.perf_counter()
        time.sleep(args.duration)
        load_.stop.set()
        for t in threads:
            t.join()
        measured = time.perf_counter() - measure_start
        sampler.stop()
        end = sampler.sample("end")
        try:
            metrics_status, raw = get(port, "/metrics", timeout=10)
            if metrics_status == 200:
                metrics_text = raw.decode()
        except OSError as exc:
            metrics_status = type(exc).__name__
        server_alive = proc.poll() is None
    finally:
        sampler.stop()
        stop_server(proc, set(sampler.workers_seen))
        log_copy.parent.mkdir(parents=True, exist_ok=True)
        if log.exists():
            shutil.copyfile(log, log_copy)
        shutil.rmtree(workdir, ignore_errors=True)

    stats = load_.merged()
    memory, replaced = memory_report(sampler, warm, end)
    server_lines = log_copy.read_text(errors="replace").splitlines()
    server_errors = [
        ln
        for ln in server_lines
        if any(
            m in ln
            for m in (
                "Traceback",
                "[ERROR]",
                "[CRITICAL]",
                "WORKER TIMEOUT",
                '"level":"ERROR"',
                '"level": "ERROR"',
                '"level":"CRITICAL"',
                '"level": "CRITICAL"',
            )
        )
    ]
    server_warnings = sum(
        1 for ln in server_lines if '"level":"WARNING"' in ln or "[WARNING]" in ln
    )

    # requests per kind
    rows, by_kind = [], {}
    total_measured = sum(len(v) for (ph, _), v in stats.latencies.items() if ph == "measure")
    errors_by_kind = Counter()
    for (ph, kind, _), n in stats.errors.items():
        if ph == "measure":
            errors_by_kind[kind] += n
    n_measure = total_measured + sum(errors_by_kind.values())
    for kind in KINDS:
        lat = stats.latencies.get(("measure", kind), [])
        n = len(lat) + errors_by_kind[kind]
        by_kind[kind] = {
            "requests": n,
            "errors": errors_by_kind[kind],
            "share_percent": 100.0 * n / max(n_measure, 1),
            "p50_ms": pct(lat, 0.5),
            "p95_ms": pct(lat, 0.95),
            "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat) * 1e3 if lat else 0.0,
        }
        k = by_kind[kind]
        rows.append(
            [
                kind,
                str(n),
                f"{k['share_percent']:.1f}%",
                f"{k['p50_ms']:.1f}",
                f"{k['p95_ms']:.1f}",
                f"{k['p99_ms']:.1f}",
                f"{k['max_ms']:.1f}",
                str(k["errors"]),
            ]
        )
    all_lat = [x for (ph, _), v in stats.latencies.items() if ph == "measure" for x in v]
    rows.append(
        [
            "total",
            str(n_measure),
            "100%",
            f"{pct(all_lat, 0.5):.1f}",
            f"{pct(all_lat, 0.95):.1f}",
            f"{pct(all_lat, 0.99):.1f}",
            f"{max(all_lat, default=0) * 1e3:.1f}",
            str(sum(errors_by_kind.values())),
        ]
    )
    n_all = sum(len(v) for v in stats.latencies.values()) + sum(stats.errors.values())
    throughput = n_measure / measured
    error_total = sum(stats.errors.values())
    worst = max(memory, key=lambda r: r["growth_percent"])
    rss_met = worst["growth_percent"] < RSS_TARGET_PERCENT and not replaced and server_alive
    errors_met = error_total == 0

    out = [
        f"soak: cds-service serve --no-auth --workers {args.workers} on 127.0.0.1:{port} "
        f"(ready by {ready_by}), {CONNECTIONS} connections, closed loop, client timeout "
        f"{CLIENT_TIMEOUT:.0f} s, seed {args.seed}, fresh-patient share {args.fresh_patients:g}",
        f"priming {prime_seconds:.1f} s, warm-up {args.warmup:g} s, measured {measured:.1f} s; "
        f"{n_all} requests in all phases, {n_measure} measured",
        f"bodies: {len(pools[OTHER])} other-drug, {len(pools[ALEM_SELECT])} alemtuzumab "
        f"order-select, {len(pools[ALEM_SIGN])} order-sign, {len(load_.bad)} bad-request "
        "kinds",
        "",
        aligned(
            [
                "kind (measured phase)",
                "requests",
                "share",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "errors",
            ],
            rows,
        ),
        "",
        f"throughput: {throughput:.1f} req/s (indicative: the client shares the machine's "
        f"{os.cpu_count()} CPUs)",
        "",
    ]
    if stats.errors:
        out += [
            aligned(
                ["errors (all phases)", "kind", "phase", "count"],
                [[t, k, ph, str(n)] for (ph, k, t), n in sorted(stats.errors.items())],
            ),
            "",
            "first errors:",
            *("  " + e for e in stats.examples),
            "",
        ]
    else:
        out += ["errors by type: none (all phases: priming, warm-up, measured)", ""]
    out += [
        aligned(
            [
                "memory (VmRSS)",
                "pid",
                "after warm-up MB",
                "end MB",
                "peak MB",
                "growth",
                "anon growth",
            ],
            [
                [
                    r["process"],
                    str(r["pid"] or ""),
                    f"{r['rss_warm_kb'] / 1024:.1f}",
                    f"{r['rss_end_kb'] / 1024:.1f}",
                    f"{r['rss_peak_kb'] / 1024:.1f}",
                    f"{r['growth_percent']:+.1f}%",
                    f"{r['anon_growth_percent']:+.1f}%",
                ]
                for r in memory
            ],
        ),
        f"samples: {len(sampler.samples)} every {args.sample_every:g} s; workers seen: "
        f"{sampler.workers_seen}; "
        + (
            f"WORKERS REPLACED: gone {[p for p in replaced if p not in end.rss]}, started "
            f"during the run {[p for p in replaced if p in end.rss]}"
            if replaced
            else "no worker replaced"
        ),
        f"server log: {len(server_lines)} lines, {len(server_errors)} error and "
        f"{server_warnings} warning lines ({log_copy})",
    ]
    out += ["  " + ln[:200] for ln in server_errors[:5]]
    if not server_alive:
        out.append("the server master EXITED during the run")
    out.append("")
    if metrics_text is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(metrics_text)
        cds = [ln for ln in metrics_text.splitlines() if ln.startswith("cds_")]
        short = [ln for ln in cds if "_bucket{" not in ln and float(ln.rsplit(" ", 1)[1]) != 0]
        out += [
            f"/metrics: {len(metrics_text.splitlines())} lines saved to {metrics_path}; "
            f"{len(cds)} cds_ samples, excerpt without histogram buckets and zero values:",
            *("  " + ln for ln in short[:60]),
        ]
        if len(short) > 60:
            out.append(f"  ... {len(short) - 60} more in the file")
    else:
        out.append(f"/metrics: not available ({metrics_status})")
    out += [
        "",
        f"errors: {error_total} (target 0) — {'met' if errors_met else 'missed'}",
        f"RSS growth: {worst['growth_percent']:.1f}% (target < {RSS_TARGET_PERCENT:g}%; "
        f"worst of total and each process: {worst['process']}"
        + ("; a worker was replaced" if replaced else "")
        + ("; the server exited" if not server_alive else "")
        + f") — {'met' if rss_met else 'missed'}",
    ]
    print("\n".join(out))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(
            orjson.dumps(
                {
                    "workers": args.workers,
                    "connections": CONNECTIONS,
                    "warmup_seconds": args.warmup,
                    "prime_seconds": prime_seconds,
                    "measured_seconds": measured,
                    "fresh_patient_share": args.fresh_patients,
                    "seed": args.seed,
                    "requests_all_phases": n_all,
                    "requests_measured": n_measure,
                    "throughput_rps": throughput,
                    "by_kind": by_kind,
                    "errors_total": error_total,
                    "errors": [
                        {"phase": ph, "kind": k, "type": t, "count": n}
                        for (ph, k, t), n in sorted(stats.errors.items())
                    ],
                    "memory": memory,
                    "workers_seen": sampler.workers_seen,
                    "workers_replaced": replaced,
                    "rss_series": [
                        {
                            "t": round(s.t - sampler.samples[0].t, 2),
                            "phase": s.phase,
                            "rss_kb": {str(p): v[0] for p, v in s.rss.items()},
                        }
                        for s in sampler.samples
                    ],
                    "server_alive": server_alive,
                    "server_error_lines": len(server_errors),
                    "metrics_status": metrics_status,
                    "metrics_file": str(metrics_path) if metrics_text else None,
                    "server_warning_lines": server_warnings,
                    "verdict": {
                        "errors_met": errors_met,
                        "rss_growth_percent": worst["growth_percent"],
                        "rss_met": rss_met,
                    },
                },
                option=orjson.OPT_INDENT_2,
            )
        )
    return 0 if errors_met and rss_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
