"""Generate docs/clinical-rules.md from the rule table and policy.toml, so the doc cannot drift
(and, between marker comments, the README's topic table and table of token refusal reasons, and
the terminology README's table of which checks read each value set).

    python -m cds_service.docs_gen           # (re)write docs/clinical-rules.md
    python -m cds_service.docs_gen --check   # exit 1 when the committed doc is stale

Each rule declares the value sets it reads (`Rule.value_sets`, next to its check function); the
README's topic table and the terminology README's table of which checks read each value set are
generated from the same declarations, between marker comments, and checked the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .domain import result_grammar
from .domain.checklist import CARD_CONTRACT_VERSION, GROUP_BY_REASON, STATUS_BY_REASON, CardGroup
from .domain.policy import Policy, load_policy
from .domain.rules import RULES, Rule
from .domain.rules.monitoring import MONITORING_RULES
from .domain.terminology import RESULT_ROLE_EXT, all_value_sets

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "clinical-rules.md"
HOOK_ORDER = ("order-select", "order-sign")


def _cell(text: str) -> str:
    """A markdown table cell: pipes escaped, one line."""
    return " ".join(text.replace("|", "\\|").split())


def _numbers(rule: Rule, policy: Policy) -> str:
    parts = []
    for key in rule.policy_keys:
        number = policy.numbers[key]
        parts.append(f"`{key}` = {number.value} {number.unit}")
    return "; ".join(parts) or "none"


def _cards_section() -> list[str]:
    """Where each finding goes, from the declarations of cds_service/domain/checklist.py."""
    lines = [
        "",
        "## Cards",
        "",
        "A critical finding always has its own card. Any other finding that is not met or "
        "unknown (and not an `info` item to confirm, which only the checklist lists) goes to "
        "the grouped card declared here (`any` matches every topic or reason); an undeclared "
        f"one goes to `{CardGroup.REVIEW.value}`.",
        "",
        "| Topic | Reason | Card |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{topic}` | `{reason}` | `{group.value}` |"
        for (topic, reason), group in GROUP_BY_REASON.items()
    ]
    lines += [
        "",
        "Checklist statuses other than the plain reading of the finding (met, not-met, unknown):",
        "",
        "| Topic | Reason | Checklist status |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{topic}` | `{reason}` | `{status.value}` |"
        for (topic, reason), status in STATUS_BY_REASON.items()
    ]
    return lines


def _monitoring_section(policy: Policy) -> list[str]:
    """The patient-view checks (`lemtrada-monitoring`), from MONITORING_RULES."""
    from .cards import MONITORING_CARD_TOPICS, MONITORING_SUMMARY_TOPIC

    value_sets = all_value_sets()
    lines = [
        "",
        "## Monitoring after the infusions (patient-view, `lemtrada-monitoring`)",
        "",
        "Every check the monitoring service runs when the chart of a patient treated with "
        "Lemtrada is opened, in rule-table order. The infusions are read as the "
        "`course-interval` check reads prior courses (Lemtrada only, never Campath); every "
        "interval counts in calendar months from the last infusion of the last course. A "
        "patient with no Lemtrada infusion, whose monitoring ended "
        f"(`monitoring_months` = {policy['monitoring_months']} months after the last infusion) "
        "or who is recorded as deceased gets no cards. A critical finding has its own card; "
        "the others are lines of "
        + " and ".join(f"`{topic}`" for topic in dict.fromkeys(MONITORING_CARD_TOPICS.values()))
        + " ("
        + "; ".join(
            f"{group.value} findings: `{topic}`" for group, topic in MONITORING_CARD_TOPICS.items()
        )
        + f"); `{MONITORING_SUMMARY_TOPIC}` is always sent, with the checklist extension and "
        "its `dates` (last infusion, monitoring ends on, next TSH due, earliest next course).",
        "",
        "| Topic | Check | Logic | Indicator | Policy numbers | Source | Value sets |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in MONITORING_RULES:
        source = policy.sources[rule.source].title
        used = ", ".join(f"`{vs}` ({_cell(value_sets[vs].title)})" for vs in rule.value_sets)
        lines.append(
            f"| `{rule.topic}` | {_cell(rule.titled(policy))} | {_cell(rule.logic)} | "
            f"{rule.indicator} | {_cell(_numbers(rule, policy))} | "
            f"{_cell(f'{source}: {rule.citation}')} | {used or 'none'} |"
        )
    return lines


def _hooks(rule: Rule) -> str:
    return ", ".join(hook for hook in HOOK_ORDER if hook in rule.hooks)


def render_clinical_rules_doc(policy: Policy | None = None) -> str:
    """The whole markdown document for the current rule table and policy."""
    policy = policy or load_policy()
    value_sets = all_value_sets()
    lines = [
        "# Clinical rules",
        "",
        "<!-- Generated by `make docs` (python -m cds_service.docs_gen) from "
        "cds_service/domain/rules and cds_service/domain/policy.toml. Do not edit by hand. -->",
        "",
        "Every check the service runs for an alemtuzumab (Lemtrada) order, in rule-table order. "
        "T0 is the planned first infusion of the ordered course. A check that cannot read its "
        "evidence answers `unknown` (a warning), never an all-clear. Card contract "
        f"{CARD_CONTRACT_VERSION}: a critical check gets its own card whose `source.topic.code` "
        "is the topic below; every other unsatisfied check is a line on a grouped card (see "
        "*Cards* below); every course also gets the `eligibility-summary` card, which lists "
        "every check (as markdown and as the `org.example.cds-service.checklist` extension) and "
        "carries the reminders that cannot be checked from FHIR (REMS certification and "
        "enrollment, infusion setting and observation, the 48-month monitoring plan).",
        "",
        "## Checks",
        "",
        "| Topic | Check | Logic | Indicator | Policy numbers | Source | Hooks |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in RULES:
        source = policy.sources[rule.source].title
        lines.append(
            f"| `{rule.topic}` | {_cell(rule.titled(policy))} | {_cell(rule.logic)} | "
            f"{rule.indicator} | "
            f"{_cell(_numbers(rule, policy))} | {_cell(f'{source}: {rule.citation}')} | "
            f"{_hooks(rule)} |"
        )
    lines += [
        "",
        "## Value sets used by each check",
        "",
        "| Topic | Value sets |",
        "|---|---|",
    ]
    for rule in RULES:
        used = rule.value_sets
        cell = ", ".join(f"`{vs}` ({_cell(value_sets[vs].title)})" for vs in used) or "none"
        lines.append(f"| `{rule.topic}` | {cell} |")
    lines += [
        "",
        "Value sets are FHIR ValueSet files in `cds_service/terminology/valuesets/`; their sources "
        "and what was left out are in `cds_service/terminology/README.md`.",
        "",
        *_result_grammar_section(),
        "## Policy numbers",
        "",
        "From `cds_service/domain/policy.toml`. `local` marks a number the label does not fix.",
        "",
        "| Key | Value | Unit | Source | Citation |",
        "|---|---|---|---|---|",
    ]
    for key in sorted(policy.numbers):
        number = policy.numbers[key]
        lines.append(
            f"| `{key}` | {number.value} | {_cell(number.unit)} | {number.source} | "
            f"{_cell(number.citation)} |"
        )
    lines += _cards_section()
    lines += _monitoring_section(policy)
    lines += ["", "## Sources", "", "| Key | Title | URL |", "|---|---|---|"]
    for key in sorted(policy.sources):
        src = policy.sources[key]
        lines.append(f"| {key} | {_cell(src.title)} | {src.url} |")
    return "\n".join(lines) + "\n"


def _result_grammar_section() -> list[str]:
    """How lab results are read: the result grammar's docstring, and the codes with a role."""
    doc = (result_grammar.__doc__ or "").strip().splitlines()
    lines = ["## Reading lab results (the result grammar)", "", *doc, ""]
    lines += [
        f"Result codes with a role (concept extension `{RESULT_ROLE_EXT}`):",
        "",
        "| Value set | Code | Display | Role |",
        "|---|---|---|---|",
    ]
    for vs_id, vs in sorted(all_value_sets().items()):
        for code, role in sorted(vs.roles.items()):
            lines.append(f"| `{vs_id}` | {code[1]} | {_cell(vs.display(code))} | {role} |")
    return [*lines, ""]


README_PATH = DOC_PATH.parent.parent / "README.md"
TERMINOLOGY_README_PATH = Path(__file__).resolve().parent / "terminology" / "README.md"
REASONS_START = "<!-- auth-reasons: generated by `make docs` from cds_service.auth -->"
REASONS_END = "<!-- /auth-reasons -->"
TOPICS_START = "<!-- topics: generated by `make docs` from cds_service.domain.rules -->"
TOPICS_END = "<!-- /topics -->"
VALUE_SETS_START = (
    "<!-- value-set-readers: generated by `make docs` from cds_service.domain.rules -->"
)
VALUE_SETS_END = "<!-- /value-set-readers -->"


def _between(text: str, start: str, end: str, block: str) -> str:
    """`text` with the lines between the `start` and `end` marker lines replaced by `block`."""
    head, found, rest = text.partition(start + "\n")
    _, end_found, tail = rest.partition(end)
    if not found or not end_found:
        raise ValueError(f"the file lacks the markers {start} ... {end}")
    return f"{head}{start}\n{block}{end}{tail}"


def render_topic_table() -> str:
    """The README's table of card topics: one row per rule, in table order, then the summary."""
    from .cards import SUMMARY_TOPIC

    policy = load_policy()
    lines = ["| topic | what it checks | indicator | hooks |", "|---|---|---|---|"]
    for rule in RULES:
        hooks = "both" if set(HOOK_ORDER) <= rule.hooks else f"{_hooks(rule)} only"
        lines.append(
            f"| `{rule.topic}` | {_cell(rule.titled(policy))} | {rule.indicator} | {hooks} |"
        )
    lines.append(
        f"| `{SUMMARY_TOPIC}` | the checklist of every check (also as the checklist "
        "extension), with REMS / infusion-setting / 48-month monitoring reminders | worst of "
        "the others "
        "(`info` when none) | both |"
    )
    return "\n".join(lines) + "\n"


MONITORING_TOPICS_START = (
    "<!-- monitoring-topics: generated by `make docs` from MONITORING_RULES -->"
)
MONITORING_TOPICS_END = "<!-- /monitoring-topics -->"


def render_monitoring_topic_table() -> str:
    """The README's table of the monitoring service's check ids, then its summary card."""
    from .cards import MONITORING_SUMMARY_TOPIC

    policy = load_policy()
    lines = ["| topic | what it checks | indicator |", "|---|---|---|"]
    lines += [
        f"| `{rule.topic}` | {_cell(rule.titled(policy))} | {rule.indicator} |"
        for rule in MONITORING_RULES
    ]
    lines.append(
        f"| `{MONITORING_SUMMARY_TOPIC}` | the monitoring checklist (also as the checklist "
        "extension, with its `dates`) | worst of the others (`info` when none) |"
    )
    return "\n".join(lines) + "\n"


def render_value_set_readers() -> str:
    """The terminology README's table: each value set file with the checks that read it."""
    value_sets = all_value_sets()
    lines = ["| value set | title | read by the checks |", "|---|---|---|"]
    for vs_id in sorted(value_sets):
        readers = ", ".join(
            f"`{rule.topic}`" for rule in (*RULES, *MONITORING_RULES) if vs_id in rule.value_sets
        )
        lines.append(
            f"| `{vs_id}` | {_cell(value_sets[vs_id].title)} | "
            f"{readers or 'none (used by the order trigger or the record reader)'} |"
        )
    return "\n".join(lines) + "\n"


CURL_START = "<!-- readme-curl-output -->"
CURL_END = "<!-- /readme-curl-output -->"


MONITORING_CURL_START = "<!-- readme-monitoring-curl-output -->"
MONITORING_CURL_END = "<!-- /readme-monitoring-curl-output -->"
MONITORING_EXAMPLE_DAY = "2026-11-30"
"""The day the README's monitoring example is asked on: the monitoring fixtures are dated
relative to it (fhir_fixtures/monitoring_scenarios.json `today`)."""


def render_curl_output(readme: str, service: str = "lemtrada-order-select") -> str:
    """What the README's curl example prints: the service's cards for the fixture it posts
    (the monitoring example on MONITORING_EXAMPLE_DAY)."""
    import json
    import re
    from contextlib import nullcontext
    from datetime import date
    from unittest import mock

    from .app import create_app

    folder = "monitoring/" if service == "lemtrada-monitoring" else ""
    fixture = re.search(rf"--data @(fhir_fixtures/requests/{folder}[\w-]+\.json)", readme)
    if fixture is None:
        raise ValueError(f"README.md: the curl example of {service} names no fixture")
    request = json.loads((README_PATH.parent / fixture.group(1)).read_text(encoding="utf-8"))
    day = date.fromisoformat(MONITORING_EXAMPLE_DAY) if folder else None
    with mock.patch("cds_service.http_api.today", return_value=day) if day else nullcontext():
        cards = (
            create_app(testing=True)
            .test_client()
            .post(f"/cds-services/{service}", json=request)
            .get_json()["cards"]
        )
    lines = "".join(
        f"{c['indicator']} {c['source']['topic']['code']} - {c['summary']}\n" for c in cards
    )
    return f"```\n{lines}```\n"


def readme_with_topics(readme: str) -> str:
    """The README with the text between the topics markers regenerated."""
    return _between(readme, TOPICS_START, TOPICS_END, render_topic_table())


def terminology_readme_with_readers(text: str) -> str:
    """The terminology README with the value-set readers table regenerated."""
    return _between(text, VALUE_SETS_START, VALUE_SETS_END, render_value_set_readers())


def render_refusal_reasons() -> str:
    """The README's table of token refusal reasons, one row per `auth.REASONS` label."""
    from .auth import REASON_MEANINGS, REASONS

    lines = ["| reason | the token is refused because |", "|---|---|"]
    lines += [f"| `{reason}` | {_cell(REASON_MEANINGS[reason])} |" for reason in REASONS]
    return "\n".join(lines) + "\n"


def readme_with_refusal_reasons(readme: str) -> str:
    """The README with the text between the auth-reasons markers regenerated."""
    return _between(readme, REASONS_START, REASONS_END, render_refusal_reasons())


def _regenerated(readme: str, terminology: str) -> tuple[str, str]:
    """(README.md, terminology/README.md) with every generated block rewritten."""
    readme = readme_with_topics(readme_with_refusal_reasons(readme))
    readme = _between(
        readme, MONITORING_TOPICS_START, MONITORING_TOPICS_END, render_monitoring_topic_table()
    )
    readme = _between(
        readme,
        MONITORING_CURL_START,
        MONITORING_CURL_END,
        render_curl_output(readme, "lemtrada-monitoring"),
    )
    return (
        _between(readme, CURL_START, CURL_END, render_curl_output(readme)),
        terminology_readme_with_readers(terminology),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/clinical-rules.md.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed doc is stale")
    parser.add_argument("--output", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    text = render_clinical_rules_doc()
    readme = README_PATH.read_text(encoding="utf-8")
    terminology = TERMINOLOGY_README_PATH.read_text(encoding="utf-8")
    new_readme, new_terminology = _regenerated(readme, terminology)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run `make docs`", file=sys.stderr)
            return 1
        for path, old, new in (
            (README_PATH, readme, new_readme),
            (TERMINOLOGY_README_PATH, terminology, new_terminology),
        ):
            if old != new:
                print(f"{path}: a generated table is stale: run `make docs`", file=sys.stderr)
                return 1
        print(f"{args.output} is up to date")
        return 0
    README_PATH.write_text(new_readme, encoding="utf-8")
    TERMINOLOGY_README_PATH.write_text(new_terminology, encoding="utf-8")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(RULES)} checks, {len(load_policy().numbers)} policy numbers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
