"""The benchmark script keeps working: a tiny smoke run (benchmarks assert no times)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Slow: runs the benchmark script against real servers;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA_BULK = ROOT.parent / "shared" / "data" / "synthea-bulk-10-patients"
"""The data the worklist bench copies (fhir_fixtures/bulk_export.py SYNTHEA_BULK)."""
NOT_THE_CHECKOUT = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
}


def checkout_files() -> dict[str, int]:
    """Every file of the checkout (tool caches and the venv aside) with its modification time."""
    files = {}
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [s for s in subfolders if s not in NOT_THE_CHECKOUT]
        for name in names:
            path = os.path.join(folder, name)
            files[os.path.relpath(path, ROOT)] = os.stat(path).st_mtime_ns
    return files


def test_bench_smoke_run_prints_tables_and_writes_the_report(tmp_path: Path) -> None:
    """`bench/bench.py --smoke` runs every part at tiny sizes and writes its markdown report."""
    out = tmp_path / "performance.md"
    before = checkout_files()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--smoke",
            "--no-plot",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkout_files() == before  # its database and report live in temporary folders
    report = out.read_text()
    for heading in (
        "## In process",
        "## Over HTTP",
        "## Slow clients",
        "## FHIR-server fallback",
        "## First calls after a fresh start",
        "## Worklist over a bulk export",
    ):
        assert heading in report
    assert "| other drug" in result.stdout and "| alemtuzumab" in result.stdout
    assert "| 0 |" in report.split("## Over HTTP")[1].split("##")[0]  # no HTTP errors
    if SYNTHEA_BULK.is_dir():  # the worklist's runs copy ../shared/data, when it is beside
        assert "| whole, 4 x the treated |" in report  # the worklist's three runs
    else:
        assert "Not run: " in report.split("## Worklist over a bulk export")[1]


def test_monitor_bench_smoke_run_replaces_its_section_and_leaves_no_export(tmp_path: Path) -> None:
    """`bench/bench.py --smoke --only monitor`: the worklist's three runs at tiny sizes, its
    section written into the report, the temporary exports deleted."""
    if not SYNTHEA_BULK.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\n## Hand-written notes\n\nkept\n")
    exports = tmp_path / "tmp"
    exports.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--smoke",
            "--only",
            "monitor",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
        env={**os.environ, "TMPDIR": str(exports)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = out.read_text()
    assert "## Hand-written notes" in report and "## Worklist over a bulk export" in report
    rows = [
        line
        for line in report.splitlines()
        if line.startswith("| a quarter") or line.startswith("| whole")
    ]
    assert len(rows) == 3
    assert list(exports.iterdir()) == []


def test_soak_smoke_run_exits_0_and_prints_the_verdicts(tmp_path: Path) -> None:
    """`bench/soak.py` at tiny durations: no errors, memory within target, the verdict lines."""
    report = tmp_path / "soak.json"
    before = checkout_files()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--duration",
            "3",
            "--warmup",
            "1",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert checkout_files() == before
    assert "errors: 0 (target 0) — met" in result.stdout
    assert "RSS growth: " in result.stdout and "(target < 10%" in result.stdout
    assert report.exists() and (tmp_path / "soak.server.log").exists()
