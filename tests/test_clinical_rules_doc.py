"""docs/clinical-rules.md is generated from the rule table and policy.toml and must not drift."""

from __future__ import annotations

import ast
import dataclasses
import functools

import pytest

from cds_service.docs_gen import (
    DOC_PATH,
    TERMINOLOGY_README_PATH,
    TOPICS_END,
    TOPICS_START,
    readme_with_topics,
    render_clinical_rules_doc,
    terminology_readme_with_readers,
)
from cds_service.domain.policy import load_policy
from cds_service.domain.rules import RULES, RULES_BY_TOPIC
from cds_service.domain.rules.monitoring import MONITORING_RULES
from cds_service.domain.terminology import all_value_sets


def test_committed_doc_equals_the_generated_one() -> None:
    """The committed docs/clinical-rules.md is exactly what the generator writes now."""
    committed = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.is_file() else ""
    assert committed == render_clinical_rules_doc(), (
        "docs/clinical-rules.md is stale: run `make docs` (python -m cds_service.docs_gen)"
    )


def test_doc_has_one_row_per_check_with_its_hooks() -> None:
    """Every rule appears once in the checks table, with the hooks it runs on."""
    doc = render_clinical_rules_doc()
    for rule in RULES:
        rows = [
            line
            for line in doc.splitlines()
            if line.startswith(f"| `{rule.topic}` | {rule.titled(load_policy())}")
        ]
        assert len(rows) == 1, rule.topic
        assert (
            rows[0]
            .rstrip(" |")
            .endswith(", ".join(h for h in ("order-select", "order-sign") if h in rule.hooks))
        )


def test_doc_lists_every_policy_number_with_value_and_unit() -> None:
    """Each policy number appears with its value, unit and source."""
    doc = render_clinical_rules_doc()
    for key, number in load_policy().numbers.items():
        assert f"| `{key}` | {number.value} | {number.unit} | {number.source} |" in doc


def test_changing_a_policy_number_changes_the_doc() -> None:
    """The doc is computed from the policy: a different interval shows up in it."""
    policy = load_policy()
    changed = dataclasses.replace(
        policy,
        numbers={
            **policy.numbers,
            "course_interval": dataclasses.replace(policy.numbers["course_interval"], value=18),
        },
    )
    assert "`course_interval` = 18 months" in render_clinical_rules_doc(changed)
    assert "`course_interval` = 12 months" in render_clinical_rules_doc(policy)


def test_premedication_is_documented_with_the_value_sets_it_declares() -> None:
    """The premedication check is documented with the corticosteroid and methylprednisolone sets."""
    doc = render_clinical_rules_doc()
    row = next(
        line
        for line in doc.split("## Value sets used by each check")[1].splitlines()
        if line.startswith("| `premedication` |")
    )
    assert "`corticosteroid-rxnorm`" in row and "`methylprednisolone-rxnorm`" in row
    assert RULES_BY_TOPIC["premedication"].value_sets == (
        "corticosteroid-rxnorm",
        "methylprednisolone-rxnorm",
    )


def test_every_declared_value_set_is_a_file() -> None:
    """A rule cannot declare a value set that is not in terminology/valuesets."""
    known = set(all_value_sets())
    assert {
        (rule.topic, vs) for rule in RULES for vs in rule.value_sets if vs not in known
    } == set()


def test_readme_topic_table_is_generated_from_the_rules() -> None:
    """The README's topic table is what `make docs` writes: one row per rule in table order."""
    readme = (DOC_PATH.parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split(TOPICS_START)[1].split(TOPICS_END)[0]
    rows = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert rows == [rule.topic for rule in RULES] + ["eligibility-summary"]
    assert readme == readme_with_topics(readme), "stale: run `make docs`"


def test_terminology_readme_lists_the_checks_reading_each_value_set() -> None:
    """The terminology README's value-set readers table is what `make docs` writes."""
    text = TERMINOLOGY_README_PATH.read_text(encoding="utf-8")
    assert text == terminology_readme_with_readers(text), "stale: run `make docs`"
    assert "| `thyroid-disorder-condition` | Thyroid disorders" in text


PACKAGE = TERMINOLOGY_README_PATH.parent.parent


@functools.cache
def string_literals() -> dict[str, frozenset[str]]:
    """Every string constant of each module of the package (parsed once for all topics)."""
    return {
        str(path.relative_to(PACKAGE)): frozenset(
            node.value
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        )
        for path in PACKAGE.rglob("*.py")
    }


DECLARED = {rule.topic: rule for rule in (*MONITORING_RULES, *RULES)}
"""Every topic with its rule: the order checks and the monitoring checks (patient-view); a
topic in both tables (autoimmune-complication) is declared in one module."""


@pytest.mark.parametrize("topic", list(DECLARED))
def test_each_topic_is_written_in_exactly_one_module(topic: str) -> None:
    """A topic id is spelled as a string literal only in the module that declares its check."""
    modules = sorted(module for module, literals in string_literals().items() if topic in literals)
    assert modules == [
        DECLARED[topic].check.__module__.removeprefix("cds_service.").replace(".", "/") + ".py"
    ]


def test_wording_table_names_only_declared_checks_and_fills_every_placeholder() -> None:
    """Each [topic.reason] of cds_service/wording.toml is a declared topic (or `any`), and its
    sentences fill from policy numbers plus facts the check gives (no stray placeholder)."""
    import string

    from cds_service.cards import ANY_TOPIC, wording_table

    policy_names = set(load_policy().placeholders())
    # The facts that reason codes carry today.
    facts = {
        "title",
        "unreadable",
        "condition",
        "why",
        "age",
        "count",
        "names",
        "medications",
        "positive",
        "unclear",
        "when",
        "t0",
        "vaccine",
        "allowed_start",
        "days",
        "latest_allowed_dose",
        "course",
        "last_dose",
        "first_evidence",
        "mg_per_ml",
        "medication",
        "last_day",
        "start",
        "until",
        "total",
        "listed",
        "missing",
        "abnormal",
        "abnormal_count",
        "tsh",
        "unassessed",
        "since",
        "values",
        "overdue",
        "next_due",
        "pending",
        "first_infusion",
        "cd4",
    }
    for (topic, reason), entry in wording_table().items():
        assert topic in DECLARED or topic == ANY_TOPIC, (topic, reason)
        for text in (entry.headline, entry.short_headline, *entry.explanation):
            names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
            assert names <= policy_names | facts, (topic, reason, names)


@pytest.mark.parametrize(
    "module", sorted({rule.check.__module__ for rule in (*RULES, *MONITORING_RULES)})
)
def test_every_reason_code_a_check_module_returns_has_its_sentences(module: str) -> None:
    """Each reason="..." a rule module writes is worded in wording.toml for a topic it declares
    (or for any topic), so no card falls back to a bare code."""
    from cds_service.cards import ANY_TOPIC, wording_table

    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reasons = {
        value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "reason"
        for value in ast.walk(node.value)
        if isinstance(value, ast.Constant) and isinstance(value.value, str)
    }
    topics = {
        rule.topic for rule in (*RULES, *MONITORING_RULES) if rule.check.__module__ == module
    } | {ANY_TOPIC}
    worded = {reason for topic, reason in wording_table() if topic in topics}
    assert reasons and reasons <= worded, reasons - worded


def test_a_reason_without_sentences_is_shown_as_its_code_not_a_crash() -> None:
    """A reason code missing from wording.toml still gives a card summary naming the code."""
    from cds_service.cards import worded
    from cds_service.domain.findings import Finding, Severity, Status

    finding = Finding("thyroid-disorder", Status.UNKNOWN, Severity.WARNING, reason="no-such")
    assert worded(finding, load_policy()).headline == (
        "thyroid-disorder: no-such (no wording; check manually)"
    )
