"""Benchmark of `cds-service monitor` over a FHIR bulk export of up to a million resources.

The export is built in a temporary folder from the Synthea bulk data in
../shared/data/synthea-bulk-10-patients: its 13 patients copied again and again with fresh ids
(every UUID of a copy gets the copy's number as its first 8 hex digits, so references stay
consistent), routine laboratory results for every patient (that export has no Observation file),
and for the treated patients an alemtuzumab course some time in the last four years with monthly
results since (some stopped early: overdue; some with a low platelet count). The treated
patients are chosen among the living ones.

Each run is `cds-service monitor EXPORT --json` in a child process; its wall time and peak
resident memory (os.wait4's rusage, this child alone) are printed beside the floor: a child that
only reads and `orjson.loads` every line of the same export, measured the same way in the same
run. Three runs: a quarter of the export and the whole export with the same treated patients
(time grows with the export, memory does not), then the whole export with four times as many
treated patients (memory grows with them).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fhir_fixtures"))

import bulk_export as fx  # noqa: E402  # fhir_fixtures/bulk_export.py

TODAY = date(2026, 11, 15)
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HEADING = "## Worklist over a bulk export (`cds-service monitor`)"
FLOOR = (
    "import orjson, pathlib, sys\n"
    "n = 0\n"
    "for path in sorted(pathlib.Path(sys.argv[1]).glob('*.ndjson')):\n"
    "    with path.open('rb') as handle:\n"
    "        for line in handle:\n"
    "            orjson.loads(line)\n"
    "            n += 1\n"
    "print(n)\n"
)
"""The floor: read and parse every line of the export, nothing kept."""


@dataclass(frozen=True)
class Template:
    """One Synthea line, cut where each UUID's first 8 hex digits go."""

    rtype: str
    parts: tuple[bytes, ...]
    patient: bytes
    """The patient's original id (the first UUID of a Patient line, else its reference)."""

    def copy(self, prefix: bytes) -> bytes:
        return prefix.join(self.parts)


def templates() -> tuple[list[Template], list[bytes], set[bytes]]:
    """Every Synthea line as a template; the patients' ids; the living patients' ids."""
    out: list[Template] = []
    patients: list[bytes] = []
    living: set[bytes] = set()
    for path in sorted(fx.SYNTHEA_BULK.glob("*.ndjson")):
        rtype = path.name.split(".")[0]
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            if rtype == "Patient":
                owner = resource["id"].encode()
                patients.append(owner)
                if "deceasedDateTime" not in resource:
                    living.add(owner)
            else:
                ref = resource.get("subject") or resource.get("patient")
                owner = ref["reference"].rsplit("/", 1)[-1].encode()
            parts: list[bytes] = []
            last = 0
            for match in UUID.finditer(line):
                parts.append(line[last : match.start()])
                last = match.start() + 8
            parts.append(line[last:])
            out.append(Template(rtype, tuple(parts), owner))
    return out, patients, living


def new_id(prefix: bytes, original: bytes) -> str:
    return (prefix + original[8:]).decode()


def copy_prefix(n: int) -> bytes:
    return f"{n:08x}".encode()


def treated_history(patient: str, rng: random.Random) -> list[dict[str, Any]]:
    """A Lemtrada course within the last four years and the monthly results since it (a fifth
    stopped early; one in ten with a low platelet count at the newest CBC)."""
    start = TODAY - timedelta(days=rng.randrange(60, 1400))
    out = fx.administrations(patient, f"{patient}-lemtrada", start, 5)
    last = TODAY - timedelta(days=rng.randrange(5, 30))
    if rng.random() < 0.2:
        last = TODAY - timedelta(days=rng.randrange(90, 400))
    first = start - timedelta(days=14)
    low = {}
    if rng.random() < 0.1:
        months = 0
        while fx.add_months(first, months + 1) <= last:
            months += 1
        low = {fx.add_months(first, months): 71.0}
    if last > first:
        out += fx.monthly_labs(patient, f"{patient}-lab", first, last, platelets=low)
    return out


def background(patient: str, rng: random.Random) -> list[dict[str, Any]]:
    """Routine results of a patient never treated: a CBC and a creatinine on four days."""
    days = sorted(TODAY - timedelta(days=rng.randrange(10, 3000)) for _ in range(4))
    return fx.background_labs(patient, f"{patient}-bg", days)


def copies_for(resources: int, per_copy: int) -> int:
    return max(1, -(-resources // per_copy))


@dataclass
class Built:
    folder: Path
    resources: int
    patients: int
    treated: list[str]
    megabytes: float


class Writer:
    """NDJSON files by type, a new file every `split` lines (as a server's $export splits)."""

    def __init__(self, folder: Path, split: int = 100_000, first_index: int = 0) -> None:
        self.folder = folder
        self.split = split
        self.first_index = first_index
        self.handles: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.total = 0

    def write(self, rtype: str, line: bytes) -> None:
        n = self.counts.get(rtype, 0)
        if n % self.split == 0:
            if rtype in self.handles:
                self.handles[rtype].close()
            index = self.first_index + n // self.split
            self.handles[rtype] = (self.folder / f"{rtype}.{index:03d}.ndjson").open("wb")
        self.handles[rtype].write(line + b"\n")
        self.counts[rtype] = n + 1
        self.total += 1

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def build(folder: Path, resources: int, treated: int, seed: int = 15) -> Built:
    """An export of at least `resources` resources with `treated` patients on alemtuzumab."""
    rng = random.Random(seed)
    lines, originals, living = templates()
    per_copy = len(lines) + 8 * len(originals)
    copies = copies_for(resources, per_copy)
    candidates = [(c, p) for c in range(copies) for p in originals if p in living]
    chosen = set(rng.sample(candidates, min(treated, len(candidates))))
    folder.mkdir(parents=True, exist_ok=True)
    writer = Writer(folder)
    treated_ids: list[str] = []
    for c in range(copies):
        prefix = copy_prefix(c)
        for template in lines:
            writer.write(template.rtype, template.copy(prefix))
        for original in originals:
            patient = new_id(prefix, original)
            if (c, original) in chosen:
                treated_ids.append(patient)
                extra = treated_history(patient, rng)
            else:
                extra = background(patient, rng)
            for resource in extra:
                writer.write(resource["resourceType"], orjson.dumps(resource))
    writer.close()
    size = sum(p.stat().st_size for p in folder.glob("*.ndjson")) / 1e6
    return Built(folder, writer.total, copies * len(originals), treated_ids, size)


def treat_more(built: Built, more: int, seed: int = 16) -> Built:
    """Give `more` untreated living patients of the export a course and monthly results, in new
    files (MedicationAdministration.900, Observation.900...): the same export, more treated."""
    rng = random.Random(seed)
    _, originals, living = templates()
    copies = built.patients // len(originals)
    already = set(built.treated)
    pool = [
        new_id(copy_prefix(c), p)
        for c in range(copies)
        for p in originals
        if p in living and new_id(copy_prefix(c), p) not in already
    ]
    added = rng.sample(pool, min(more, len(pool)))
    writer = Writer(built.folder, first_index=900)
    for patient in added:
        for resource in treated_history(patient, rng):
            writer.write(resource["resourceType"], orjson.dumps(resource))
    writer.close()
    size = sum(p.stat().st_size for p in built.folder.glob("*.ndjson")) / 1e6
    return Built(
        built.folder, built.resources + writer.total, built.patients, built.treated + added, size
    )


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float
    stdout: bytes


MEASURE = (
    "import os, sys, time\n"
    "start = time.perf_counter()\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'\\nMEASURED {time.perf_counter() - start} {usage.ru_maxrss}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)
"""Runs the command as its own child and reports that child's wall time and peak RSS. Linux
keeps a process's peak RSS across exec, and subprocess starts children from this (large)
benchmark process: measured directly, every child would report at least the benchmark's own
size. Forked from this small interpreter instead, the child starts from a few MB."""


def measure(command: list[str]) -> Measured:
    """Wall time and peak resident memory of one process running `command`."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, check=False, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[:5]} exited {result.returncode}: {result.stderr[-2000:]!r}")
    seconds, kilobytes = result.stderr.rsplit(b"MEASURED ", 1)[1].split()
    return Measured(float(seconds), int(kilobytes) / 1024, result.stdout)


READING = (
    "import sys\n"
    "from pathlib import Path\n"
    "from cds_service.bulk_export import Reading, alemtuzumab_patients, collect, open_export\n"
    "export = open_export(Path(sys.argv[1]))\n"
    "treated = alemtuzumab_patients(export)\n"
    "kept = collect(export, treated, Reading())\n"
    "print(len(kept.by_patient))\n"
)
"""The worklist's two passes alone (no evaluation): what reading the export costs."""


@dataclass(frozen=True)
class Run:
    label: str
    resources: int
    megabytes: float
    treated: int
    listed: int
    work: Measured
    reading: Measured
    floor: Measured

    @property
    def evaluation_ms_per_patient(self) -> float:
        return 1e3 * max(self.work.seconds - self.reading.seconds, 0.0) / max(self.treated, 1)

    def row(self) -> list[str]:
        return [
            self.label,
            f"{self.resources:,}",
            f"{self.megabytes:.0f}",
            str(self.treated),
            str(self.listed),
            f"{self.floor.seconds:.1f}",
            f"{self.reading.seconds:.1f}",
            f"{self.reading.seconds / self.floor.seconds:.2f}",
            f"{self.work.seconds:.1f}",
            f"{self.evaluation_ms_per_patient:.0f}",
            f"{self.floor.peak_mb:.0f}",
            f"{self.reading.peak_mb:.0f}",
            f"{self.work.peak_mb:.0f}",
        ]


HEADERS = [
    "export",
    "resources",
    "MB",
    "treated patients",
    "rows",
    "floor s",
    "both passes s",
    "passes / floor",
    "worklist s",
    "evaluation ms per treated patient",
    "floor peak MB",
    "both passes peak MB",
    "worklist peak MB",
]


def run_one(label: str, built: Built) -> Run:
    floor = measure([sys.executable, "-c", FLOOR, str(built.folder)])
    reading = measure([sys.executable, "-c", READING, str(built.folder)])
    work = measure(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "monitor",
            str(built.folder),
            "--today",
            TODAY.isoformat(),
            "--json",
        ]
    )
    listed = len(orjson.loads(work.stdout)["patients"])
    return Run(
        label, built.resources, built.megabytes, len(built.treated), listed, work, reading, floor
    )


def report(smoke: bool) -> list[str]:
    """The worklist section of the report: the three runs, or, when the Synthea bulk data is not
    beside the checkout (a clone without ../shared), a line saying why nothing was measured."""
    if not fx.SYNTHEA_BULK.is_dir():
        return [HEADING, "", f"Not run: {fx.SYNTHEA_BULK} is not beside this checkout.", ""]
    return section(monitor_runs(smoke), smoke)


def monitor_runs(smoke: bool) -> list[Run]:
    """Three runs (see the module's docstring); every export is deleted afterwards."""
    small, large = (4_000, 16_000) if smoke else (250_000, 1_000_000)
    treated, more = (4, 12) if smoke else (100, 300)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="cds-bench-export-") as tmp:
        quarter = build(Path(tmp) / "quarter", small, treated)
        runs.append(run_one("a quarter", quarter))
        shutil.rmtree(quarter.folder)
        whole = build(Path(tmp) / "whole", large, treated)
        runs.append(run_one("whole", whole))
        more_treated = treat_more(whole, more)
        runs.append(run_one("whole, 4 x the treated", more_treated))
    return runs


def section(runs: list[Run], smoke: bool) -> list[str]:
    """The report's section: the table and what it shows."""
    quarter, whole, more = runs
    size_ratio = whole.resources / quarter.resources
    return [
        HEADING,
        "",
        f"Generated by `python bench/bench.py {'--smoke ' if smoke else ''}--only monitor` on "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs. `bench/monitor.py` builds the "
        "export in a temporary folder from the Synthea bulk data (13 patients copied with fresh "
        "ids, routine results for everyone, an alemtuzumab course and monthly results for the "
        "treated) and deletes it afterwards. Each figure is one child process (wall time; peak "
        "resident memory from its own rusage): the floor reads and `orjson.loads` every line "
        "of the export and keeps nothing; *both passes* is the worklist's reading alone (pass 1 "
        "finds the treated patients, pass 2 keeps their lines); *worklist* is "
        "`cds-service monitor EXPORT --json`, reading plus the checks of every treated patient "
        "(the evaluation per patient is worklist minus both passes, over the treated patients).",
        "",
        _table(runs),
        "",
        f"Reading, whole / quarter: **{whole.reading.seconds / quarter.reading.seconds:.2f}** "
        f"for {size_ratio:.2f} x the resources (floor: "
        f"{whole.floor.seconds / quarter.floor.seconds:.2f}); the passes cost "
        f"{quarter.reading.seconds / quarter.floor.seconds:.2f} and "
        f"{whole.reading.seconds / whole.floor.seconds:.2f} x the floor. The evaluation is per "
        f"treated patient ({quarter.evaluation_ms_per_patient:.0f}, "
        f"{whole.evaluation_ms_per_patient:.0f} and {more.evaluation_ms_per_patient:.0f} ms: "
        "the same checks as the patient-view service, R4B validation of each result read "
        "included). Peak memory with the same "
        f"{whole.treated} treated patients: {quarter.work.peak_mb:.0f} MB for a quarter of the "
        f"export, {whole.work.peak_mb:.0f} MB for the whole; with {more.treated} treated "
        f"patients: {more.work.peak_mb:.0f} MB. The worklist holds the treated patients' "
        "records (raw lines, parsed one patient at a time), nothing of the others. The machine "
        "is shared: compare the ratios of one run, not seconds across runs.",
        "",
    ]


def _table(runs: list[Run]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
    lines += ["| " + " | ".join(r.row()) + " |" for r in runs]
    return "\n".join(lines)
