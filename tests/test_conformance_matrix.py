"""docs/conformance.md cannot lie: named tests exist, every in-scope requirement is listed once.

The requirement list is the Inferno CRD test kit's CSV, copied unchanged into tests/data/inferno/
(source and SHA-256 in its SOURCES.md), so every check runs on a clean clone.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import pathlib
import re
from collections import Counter
from functools import cache

ROOT = pathlib.Path(__file__).resolve().parents[1]
MATRIX = ROOT / "docs" / "conformance.md"
INFERNO = ROOT / "tests" / "data" / "inferno"
CSV = INFERNO / "davinci_crd_test_kit_requirements.csv"
CORE = "cds-hooks_2.0"
LIBRARY = "cds-hooks-library_1.0.1"
STATUSES = ("covered", "not applicable", "open")
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
SECTION = re.compile(r"^## Set `([^`]+)`")
ROW = re.compile(
    r"^\| (\d+) \| (.*) \| (\S+(?: \S+)*) \| (covered|not applicable|open) \| (.*) \|$"
)


def _rows() -> list[tuple[str, str, str, str]]:
    """(set, id, status, evidence) of every requirement row of the matrix."""
    current = None
    out = []
    for line in MATRIX.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):  # a section of another kind ends the set
            heading = SECTION.match(line)
            current = heading.group(1) if heading else None
            continue
        if current and line.startswith("| ") and not line.startswith("| ID |"):
            match = ROW.match(line)
            assert match, f"malformed matrix row: {line[:120]}"
            out.append((current, match.group(1), match.group(4), match.group(5)))
    return out


@cache
def _functions(path: str) -> frozenset[str]:
    """Names of the test functions defined at the top level of a test file (empty if absent)."""
    file = ROOT / path
    if not file.is_file():
        return frozenset()
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return frozenset(
        node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    )


def test_every_covered_row_names_at_least_one_test() -> None:
    """A `covered` row names tests/FILE.py::FUNCTION; other rows give a reason."""
    rows = _rows()
    assert rows
    for req_set, rid, status, evidence in rows:
        if status == "covered":
            assert TEST_REF.search(evidence), f"{req_set} {rid}: covered but names no test"
        else:
            assert len(evidence.strip()) > 20, f"{req_set} {rid}: {status} without a reason"


PATIENT_VIEW = "## Hook `patient-view`"
PATIENT_VIEW_ROW = re.compile(
    r"^\| PV-(\w+) \| (.*) \| (\S+(?: \S+)*) \| (covered|not applicable|open) \| (.*) \|$"
)


def _patient_view_rows() -> list[tuple[str, str, str]]:
    """(row name, status, evidence) of the patient-view section (rows written by the project:
    the test kit's list has none for that hook)."""
    text = MATRIX.read_text(encoding="utf-8")
    section = text[text.index(PATIENT_VIEW) :].split("\n## ", 1)[0]
    return [
        (m.group(1), m.group(4), m.group(5))
        for line in section.splitlines()
        if (m := PATIENT_VIEW_ROW.match(line))
    ]


def test_every_patient_view_context_field_has_a_covered_row() -> None:
    """Each context field of patient-view in hook_spec.FIELDS has a row naming its tests."""
    from cds_service.hook_spec import FIELDS

    rows = {name: (status, evidence) for name, status, evidence in _patient_view_rows()}
    fields = {f.name for f in FIELDS if f.parent == "context" and f.applies_to("patient-view")}
    assert fields == {"userId", "patientId", "encounterId"}
    for name in fields:
        status, evidence = rows[name]
        assert status == "covered" and TEST_REF.search(evidence), name


def test_every_named_test_exists() -> None:
    """Every tests/FILE.py::FUNCTION the matrix names is a function defined in that file."""
    evidence_texts = [e for _, _, _, e in _rows()] + [e for _, _, e in _patient_view_rows()]
    missing = sorted(
        {
            f"{path}::{name}"
            for evidence in evidence_texts
            for path, name in TEST_REF.findall(evidence)
            if name not in _functions(path)
        }
    )
    assert not missing, "the matrix names tests that do not exist:\n" + "\n".join(missing)


def test_counts_at_the_top_match_the_rows() -> None:
    """The headline counts (covered / not applicable / open) are those of the table."""
    counts = Counter(status for _, _, status, _ in _rows())
    headline = (
        f"**{counts['covered']} covered, {counts['not applicable']} not applicable, "
        f"{counts['open']} open** ({sum(counts.values())} requirements)."
    )
    assert headline in MATRIX.read_text(encoding="utf-8")


def test_open_items_line_lists_exactly_the_open_rows() -> None:
    """The 'Open items' line names exactly the rows whose status is open."""
    text = MATRIX.read_text(encoding="utf-8")
    line = next(li for li in text.splitlines() if li.startswith("Open items:"))
    listed = set(re.findall(r"([\w.-]+ \d+)", line.removeprefix("Open items:")))
    assert listed == {f"{s} {i}" for s, i, status, _ in _rows() if status == "open"}


def _in_scope(row: dict[str, str]) -> bool:
    actors = row["Actors"]
    if "Service" not in actors and "Server" not in actors:
        return False
    if row["Req Set"] == CORE:
        return True
    return row["Req Set"] == LIBRARY and any(
        f"/{hook}.html" in row["URL"] for hook in ("order-select", "order-sign")
    )


def test_the_requirement_list_is_the_recorded_copy() -> None:
    """The CSV is byte for byte the copy whose SHA-256 tests/data/inferno/SOURCES.md records."""
    recorded = re.search(
        r"^([0-9a-f]{64})  " + re.escape(CSV.name) + "$",
        (INFERNO / "SOURCES.md").read_text(encoding="utf-8"),
        re.M,
    )
    assert recorded, "SOURCES.md records no SHA-256 for the CSV"
    assert hashlib.sha256(CSV.read_bytes()).hexdigest() == recorded.group(1)


def test_every_in_scope_requirement_appears_exactly_once() -> None:
    """Each CDS-service requirement of both sets (library: order hooks only) is exactly one row."""
    with CSV.open(encoding="utf-8-sig", newline="") as handle:
        wanted = Counter((r["Req Set"], r["ID"]) for r in csv.DictReader(handle) if _in_scope(r))
    listed = Counter((req_set, rid) for req_set, rid, _, _ in _rows())
    assert all(n == 1 for n in wanted.values()), "duplicate ids in the CSV itself"
    duplicates = sorted(k for k, n in listed.items() if n > 1)
    assert not duplicates, f"listed more than once: {duplicates}"
    assert sorted(set(wanted) - set(listed)) == [], "in-scope requirements missing from the matrix"
    assert sorted(set(listed) - set(wanted)) == [], "rows in the matrix that are not in scope"
