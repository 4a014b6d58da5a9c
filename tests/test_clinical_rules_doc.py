"""docs/clinical-rules.md is generated from the rule table and policy.toml and must not drift."""

from __future__ import annotations

import dataclasses

from cds_service.docs_gen import DOC_PATH, render_clinical_rules_doc, value_sets_of
from cds_service.domain.policy import load_policy
from cds_service.domain.rules import RULES, RULES_BY_TOPIC


def test_committed_doc_equals_the_generated_one() -> None:
    """The committed docs/clinical-rules.md is exactly what the generator writes now."""
    committed = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.is_file() else ""
    assert committed == render_clinical_rules_doc(), (
        "docs/clinical-rules.md is stale: run `make docs` (python -m cds_service.docs_gen)")


def test_doc_has_one_row_per_check_with_its_hooks() -> None:
    """Every rule appears once in the checks table, with the hooks it runs on."""
    doc = render_clinical_rules_doc()
    for rule in RULES:
        rows = [line for line in doc.splitlines()
                if line.startswith(f"| `{rule.topic}` | {rule.title}")]
        assert len(rows) == 1, rule.topic
        assert rows[0].rstrip(" |").endswith(", ".join(h for h in ("order-select", "order-sign")
                                                       if h in rule.hooks))


def test_doc_lists_every_policy_number_with_value_and_unit() -> None:
    """Each policy number appears with its value, unit and source."""
    doc = render_clinical_rules_doc()
    for key, number in load_policy().numbers.items():
        assert f"| `{key}` | {number.value} | {number.unit} | {number.source} |" in doc


def test_changing_a_policy_number_changes_the_doc() -> None:
    """The doc is computed from the policy: a different interval shows up in it."""
    policy = load_policy()
    changed = dataclasses.replace(policy, numbers={
        **policy.numbers,
        "course_interval": dataclasses.replace(policy.numbers["course_interval"], value=18)})
    assert "`course_interval` = 18 months" in render_clinical_rules_doc(changed)
    assert "`course_interval` = 12 months" in render_clinical_rules_doc(policy)


def test_value_sets_are_read_from_the_rule_code() -> None:
    """The premedication check is documented with the corticosteroid and methylprednisolone sets."""
    assert value_sets_of(RULES_BY_TOPIC["premedication"]) == [
        "corticosteroid-rxnorm", "methylprednisolone-rxnorm"]
