"""Every sentence a clinician reads lives in cds_service/wording.toml, not in the rule modules.

A check returns data: reason codes, Evidence(kind, facts) and Suggestion(wording, facts). These
tests read the rule modules' source with `ast` and hold them to that, and hold wording.toml to
the kinds and names the modules use.
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from cds_service.cards import EVIDENCE, SUGGESTION, wording_parts
from cds_service.domain.policy import load_policy
from cds_service.domain.result_grammar import READ_HOWS
from cds_service.domain.results import READ_PREFIX

RULES_DIR = Path(__file__).resolve().parent.parent / "cds_service" / "domain" / "rules"
RULE_MODULES = sorted(RULES_DIR.glob("*.py"))
WORDED_MODULES = RULE_MODULES + [
    RULES_DIR.parent / "results.py",
    RULES_DIR.parent / "result_grammar.py",
]
"""Modules whose Evidence kinds and facts wording.toml words: the rules, and the lab result
(results.LabResult.describe) with the facts the result grammar reads."""
DECLARATION_FIELDS = ("title", "logic", "citation")
"""Keywords of a Rule declaration: title, logic and citation are reviewed with the declaration
(the clinical-rules doc prints them), so they may be prose."""
LOWER_WORD = re.compile(r"[a-z]+[,:;.]?")
SENTENCE_WORDS = 4
UNREADABLE_NOTES = {
    "alemtuzumab given, date not readable",
    "alemtuzumab given {}, exact day not recorded",
    "result has no date",
}
"""Notes of record.Unreadable (why a resource could not be read) still written in the rule
modules: Unreadable carries free text, most of it from the FHIR validator, and wording that is
a change of its own. Listed here so that the list can only shrink."""


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _is_doc_assignment(node: ast.AST) -> bool:
    """`f.__doc__ = ...`: a docstring written by code."""
    return isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Attribute) and t.attr == "__doc__" for t in node.targets
    )


def _exempt(tree: ast.Module) -> set[int]:
    """Ids of the nodes that may hold prose: docstrings (of the module, classes, functions and
    attributes), the declaration fields, exception messages and the parts of an f-string (the
    f-string itself is judged whole)."""
    exempt: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            exempt.add(id(node.value))  # a bare string statement: a docstring
        elif _is_doc_assignment(node) or (
            isinstance(node, ast.keyword) and node.arg in DECLARATION_FIELDS
        ):
            exempt.update(id(n) for n in ast.walk(node.value))
        elif isinstance(node, ast.Raise) and node.exc is not None:
            exempt.update(id(n) for n in ast.walk(node.exc))
        elif isinstance(node, ast.JoinedStr):
            exempt.update(id(n) for n in node.values)
    return exempt


def sentences(path: Path) -> list[str]:
    """String literals of a rule module that read like a sentence a clinician would see.

    The rule: a literal (an f-string with each {expression} read as "{}") that has at least four
    lower-case words, each letters only and perhaps ending in a comma, colon, semicolon or full
    stop. Codes and keys ("order-hcv-rna", "tb-screening-loinc"), FHIR field paths
    ("effectivePeriod.end"), status codes and short names ("CBC with differential" is three)
    stay under it; a phrase such as "dose not stated in mg" or "confirm when it was given" does
    not. Docstrings, the declaration fields (title, logic, citation) and exception messages
    (for developers) are exempt.
    """
    tree = _tree(path)
    exempt = _exempt(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
        else:
            continue
        words = [w for w in text.split() if LOWER_WORD.fullmatch(w)]
        if len(words) >= SENTENCE_WORDS and text not in UNREADABLE_NOTES:
            found.append(text)
    return found


@pytest.mark.parametrize("path", RULE_MODULES, ids=lambda p: f"{p.name} writes no sentence")
def test_a_rule_module_writes_no_clinician_facing_sentence(path: Path) -> None:
    """What a check says is worded in wording.toml; the module gives codes and facts."""
    assert sentences(path) == []


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        pytest.param("confirm when it was given", True, id="a phrase with a verb is a sentence"),
        pytest.param(
            "{} days before the planned start ({})",
            True,
            id="an f-string is judged with its expressions as placeholders",
        ),
        pytest.param("order-hcv-rna", False, id="an orderable key is not"),
        pytest.param("CBC with differential", False, id="a three-word short name is not"),
        pytest.param("effectivePeriod.end", False, id="a FHIR path is not"),
    ],
)
def test_the_sentence_rule_tells_prose_from_codes(
    tmp_path: Path, text: str, sentence: bool
) -> None:
    """The detector above flags prose and lets codes, paths and short names through."""
    literal = f'f"{text}"' if "{}" in text else repr(text)
    source = tmp_path / "rule.py"
    source.write_text(
        f"def check(x, y):\n    return Finding(x, {literal.replace('{}', '{y}')})\n",
        encoding="utf-8",
    )
    assert bool(sentences(source)) is sentence


def test_docstrings_declarations_and_exception_messages_may_be_prose(tmp_path: Path) -> None:
    source = tmp_path / "rule.py"
    source.write_text(
        '"""A module docstring that says what the checks do."""\n'
        "def check():\n"
        '    """Warning when the patient is on another therapy."""\n'
        '    raise ValueError("two rules share the same topic")\n'
        'RULE = Rule(title="No other MS therapy running at the start",\n'
        '            logic="a running therapy gives a warning card",\n'
        '            citation="PI section 5 (concomitant therapies increase the risk)")\n',
        encoding="utf-8",
    )
    assert sentences(source) == []


def _calls(name: str) -> list[ast.Call]:
    """Calls of `name` (a function or a method) in the rule modules and the lab result."""
    return [
        node
        for path in WORDED_MODULES
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def _literals(node: ast.AST) -> set[str]:
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def _kinds(node: ast.expr, line: int) -> set[str]:
    """The kinds an Evidence(...) first argument may be: a literal, either branch of a
    conditional, or none for a variable (its literals are found where it is passed)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _kinds(node.body, line) | _kinds(node.orelse, line)
    assert isinstance(node, (ast.Name, ast.Subscript)), (
        f"line {line}: write each evidence kind whole, so it can be found"
    )
    return set()


def _evidence_kinds() -> set[str]:
    """Kinds the rule modules write: the first argument of each Evidence(...) (every branch of a
    conditional), and the kinds passed to ConditionHit.evidence(...) and its default."""
    kinds: set[str] = set()
    for call in _calls("Evidence"):
        kinds |= _kinds(call.args[0], call.lineno)
    for call in _calls("evidence"):
        kinds |= {k for arg in call.args for k in _literals(arg)}
    tree = _tree(RULES_DIR / "conditions.py")
    method = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "evidence"
    )
    kinds |= {k for default in method.args.defaults for k in _literals(default)}
    kinds |= {READ_PREFIX + how for how in READ_HOWS}  # how a lab result was read
    return kinds


def _suggestion_names() -> set[str]:
    """Names the rule modules give their suggestions: order_test's and _medication_suggestion's
    second argument."""
    names: set[str] = set()
    for function in ("order_test", "_medication_suggestion"):
        for call in _calls(function):
            assert isinstance(call.args[1], ast.Constant), f"line {call.lineno}"
            names.add(str(call.args[1].value))
    return names


def test_every_evidence_kind_a_rule_module_writes_is_worded_and_every_line_is_used() -> None:
    written, worded = _evidence_kinds(), set(wording_parts()[EVIDENCE])
    assert written, "no Evidence(...) found: the test no longer reads the modules"
    assert written - worded == set(), "kinds without a line in wording.toml [evidence]"
    assert worded - written == set(), "lines in wording.toml [evidence] no check writes"


def test_every_suggestion_a_rule_module_makes_is_worded_and_every_entry_is_used() -> None:
    made, worded = _suggestion_names(), set(wording_parts()[SUGGESTION])
    assert made, "no suggestion found: the test no longer reads the modules"
    assert made == worded


def _fact_names() -> set[str]:
    """Names of the facts the rule modules give: string keys of dict literals and keyword
    arguments of order_test / _medication_suggestion."""
    names = {
        key.value
        for path in WORDED_MODULES
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Dict)
        for key in node.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }
    for function in ("order_test", "_medication_suggestion"):
        names |= {kw.arg for call in _calls(function) for kw in call.keywords if kw.arg}
    return names


def test_evidence_and_suggestion_wording_fill_only_from_facts_and_policy() -> None:
    """A placeholder is a policy number, a fact some check gives, or (for a suggestion) its
    display: a misspelt one would fail on the card instead."""
    allowed = set(load_policy().placeholders()) | _fact_names() | {"display"}
    parts = wording_parts()
    texts = [(kind, text) for kind, text in parts[EVIDENCE].items()]
    texts += [(name, text) for name, entry in parts[SUGGESTION].items() for text in entry.values()]
    for key, text in texts:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
        assert names <= allowed, (key, names - allowed)


def test_an_evidence_line_fills_from_the_facts_its_check_gives() -> None:
    """Where an Evidence(...) writes its facts as a dict literal without ** parts, each
    placeholder of its line is one of those facts or a policy number (else the card would fail
    on that evidence)."""
    lines, numbers = wording_parts()[EVIDENCE], set(load_policy().placeholders())
    checked = 0
    for call in _calls("Evidence"):
        facts = call.args[1] if len(call.args) > 1 else ast.Dict(keys=[], values=[])
        if not isinstance(facts, ast.Dict) or None in facts.keys:
            continue  # facts built elsewhere: the fact-name test above covers them
        given = {k.value for k in facts.keys if isinstance(k, ast.Constant)}
        for kind in _kinds(call.args[0], call.lineno):
            names = {name for _, name, _, _ in string.Formatter().parse(lines[kind]) if name}
            assert names <= given | numbers, (call.lineno, kind, names - given - numbers)
            checked += 1
    assert checked > 30
