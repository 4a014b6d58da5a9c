"""Data flows downward only: no module of the package imports a module of a layer above its own.

Every import is read from the source with `ast`: absolute and relative ones, and those inside
functions or under `if TYPE_CHECKING` (a deferred import still runs back up, only later).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cds_service"

# The layers, bottom first. A module may import its own layer and the layers below it.
# A name ending in ".*" covers a package and everything under it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation: settings, errors, the FHIR models shim, data origins, logs and metrics, "
        "storage, one-deadline GET, the table of request fields",
        (
            "cds_service",
            "config",
            "errors",
            "models",
            "origin",
            "observability",
            "storage",
            "deadline_fetch",
            "hook_spec",
        ),
    ),
    ("domain: pure rules over a patient record (no I/O, no clock)", ("domain.*",)),
    (
        "FHIR access: prefetch semantics and the FHIR client, given an endpoint; the site's "
        "terminology server",
        ("fhir.*", "terminology_server"),
    ),
    (
        "request, services and presentation: the hook request, the services table, cards, "
        "EHR auth, feedback and audit, retention",
        ("hook_request", "services", "cards", "auth", "feedback", "retention"),
    ),
    (
        "engine and what runs on it: one hook call, check reports, validation, warm-up, dev "
        "issuer, the monitoring worklist over a bulk export",
        (
            "engine",
            "check_report",
            "conformance",
            "dev_issuer",
            "warmup",
            "bulk_export",
            "worklist",
        ),
    ),
    (
        "entry points: the HTTP layer, the app factory, CORS, the server, the CLI, and the docs "
        "generator (it runs the app for the README's example answer)",
        ("http_api", "app", "cors", "server", "cli", "docs_gen"),
    ),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index of the module's layer; KeyError for a module no layer names."""
    short = module.removeprefix("cds_service").removeprefix(".") or "cds_service"
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if short == member or (
                member.endswith(".*") and (short == member[:-2] or short.startswith(member[:-1]))
            ):
                return index
    raise KeyError(module)


def _target(name: str, modules: set[str]) -> str | None:
    """The package module an imported name loads (`cds_service.domain.rules.base.Rule` ->
    `cds_service.domain.rules.base`), or None when it is not one of ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(
    module: str, source: str, is_package: bool, modules: set[str]
) -> Iterator[tuple[int, str]]:
    """(line, imported package module) for every import in `source`, relative ones resolved."""
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                start = f"{base}.{node.module}" if node.module else base
            else:
                start = node.module or ""
            names = [f"{start}.{alias.name}" for alias in node.names]
        for name in names:
            target = _target(name, modules)
            if target is not None and target != module:
                yield node.lineno, target


def upward_imports(
    module: str, source: str, is_package: bool = False, modules: set[str] | None = None
) -> list[str]:
    """Each import of `source` (as module `module`) that reaches a layer above its own."""
    known = set(MODULES) if modules is None else modules
    own = layer_of(module)
    return [
        f"{module} line {line} imports {target} ({LAYERS[layer_of(target)][0].split(':')[0]})"
        for line, target in imports_of(module, source, is_package, known)
        if layer_of(target) > own
    ]


def test_every_module_of_the_package_is_in_a_stated_layer() -> None:
    """A new module must be placed in a layer here before it can be checked."""
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert unplaced == []


def test_no_module_imports_a_module_of_a_layer_above_it() -> None:
    """Dependencies point downward only: the FHIR client loads no rule, the domain no client."""
    problems = []
    for module, path in MODULES.items():
        problems += upward_imports(module, path.read_text(), path.name == "__init__.py")
    assert problems == []


def test_the_walk_sees_the_imports_between_the_packages_modules() -> None:
    """The walk finds relative imports (the engine's import of the cards, the domain's own)."""
    edges = {
        (module, target)
        for module, path in MODULES.items()
        for _, target in imports_of(
            module, path.read_text(), path.name == "__init__.py", set(MODULES)
        )
    }
    assert ("cds_service.engine", "cds_service.cards") in edges
    assert ("cds_service.domain.evaluate", "cds_service.domain.rules") in edges
    assert ("cds_service.cli", "cds_service.server") in edges  # inside a function


UPWARD = "cds_service.domain.record"
CASES = [
    pytest.param(
        "from ..cards import card_topic\n",
        ["cds_service.cards"],
        id="a relative import of the cards from the domain runs back up",
    ),
    pytest.param(
        "def f():\n    from ..engine import answer\n",
        ["cds_service.engine"],
        id="an import inside a function is checked too",
    ),
    pytest.param(
        "import cds_service.fhir.client\n",
        ["cds_service.fhir.client"],
        id="an absolute import of the FHIR client from the domain runs back up",
    ),
    pytest.param(
        "from .. import observability\n",
        [],
        id="the domain may use the foundation (logs and metrics)",
    ),
    pytest.param(
        "from .fhirdata import LOINC\nfrom . import terminology\n",
        [],
        id="imports within the domain are allowed",
    ),
]


@pytest.mark.parametrize("source,expected", CASES)
def test_an_import_that_runs_back_up_is_reported(source: str, expected: list[str]) -> None:
    """The check itself: an upward import written any way is found, a downward one is not."""
    found = upward_imports(UPWARD, source)
    assert [problem.split(" imports ")[1].split(" ")[0] for problem in found] == expected
