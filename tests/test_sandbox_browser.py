"""The real CDS Hooks Sandbox drives the service in Chromium, with EHR authentication on.

Started by this module on 127.0.0.1, and stopped by pid / shutdown afterwards:
- the prebuilt Sandbox, served as static files straight from ../shared/cds-hooks-sandbox (never
  copied into the repository; see its SOURCES.md);
- a FHIR R4 server holding one fixture patient, and a test-only CDS service whose suggestion puts
  Lemtrada on the Sandbox's draft order, since its picker lists oral drugs only
  (tests/sandbox_servers.py);
- `cds-service serve`, trusting the Sandbox's issuer with the JWKS from that folder pinned and its
  published `jku` allow-listed. Its private key is public: trusted here, for a test, only.

The browser may reach 127.0.0.1 only; anything else (the Sandbox's default discovery endpoint) is
aborted. One clinician's journey per module: on Rx View (order-select), type the planned start, take
the helper's suggestion, read the cards, order the suggested VZV IgG and override the dose card with
a reason; on Rx Sign (order-sign), sign, read the cards and override the premedication card; then
the Patient View (patient-view) of a patient treated with Lemtrada three months ago whose monthly
CBC is overdue (the monitoring table's row, dated from today), served by a second FHIR server: read
the monitoring cards. The tests below assert what the clinician saw and what reached the feedback
store. Screenshots of the three screens are left in the module's temporary folder. Skipped when
the Sandbox folder, Chromium or the playwright module is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from browser import launch_chromium, why_no_chromium
from fixture_requests import fixture_request
from sandbox_servers import (
    FIXTURE,
    SANDBOX_DIR,
    LemtradaPicker,
    SandboxFhirServer,
    StaticSite,
    sandbox_url,
)
from served import free_port, stop, wait_until_serving

from cds_service.domain.fhirdata import add_months
from cds_service.domain.policy import load_policy
from cds_service.domain.rules import RULES
from cds_service.domain.rules.monitoring import MONITORING_RULES
from cds_service.services import monitoring_prefetch_templates, prefetch_templates

# Slow: Chromium, the CDS Hooks Sandbox and real servers;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_JWKS = SANDBOX_DIR / ".well-known" / "jwks.json"
PLANNED_START = "12072026"
"""12/07/2026 typed into the Start Date field: the fixture's T0 (its data are dated from it)."""
TIMEOUT_MS = 90_000
"""For every wait on the page: generous, as CI machines can be slow."""

CARD = ".MuiCard-root"
SUMMARY_IN_CARD = ".MuiCardContent-root > p.MuiTypography-root"
CHECKLIST = "Lemtrada eligibility:"
PICKER_CARD = "Test helper: put Lemtrada on the draft order"

# How many checks each hook runs (the summary card counts them).
CHECKS = {
    hook: sum(1 for rule in RULES if hook in rule.hooks) for hook in ("order-select", "order-sign")
}
# What the clinician sees, top to bottom, once Lemtrada is on the Sandbox's draft order (card
# contract 2.0: the grouped cards, then the summary). The dose line is the Sandbox's own doing:
# its draft order always says 1 {pill} (read as "1 pill") with no route.
REVIEW_DOSE = "Review before starting Lemtrada: Lemtrada order: dose 1 pill not readable as mg"
EXPECTED_CARDS = {
    "rx-view": [
        "Work-up before starting Lemtrada: order VZV IgG",
        REVIEW_DOSE,
        f"Lemtrada eligibility: 2 of {CHECKS['order-select']} checks need attention before the "
        "start on 2026-12-07",
    ],
    "rx-sign": [
        "Work-up before starting Lemtrada: order VZV IgG",
        REVIEW_DOSE,
        "2 infusion-day orders to complete: premedication, herpes prophylaxis",
        f"Lemtrada eligibility: 4 of {CHECKS['order-sign']} checks need attention before the "
        "start on 2026-12-07",
    ],
}
# The checklist rows (by check title): the checks that are not met; the met ones are named on
# one line after the table.
# The fixture's only condition, hypertension, is one no check assesses: an item to confirm.
EXPECTED_PROBLEMS = {
    "rx-view": {
        "Varicella-zoster immunity": "UNKNOWN",
        "Dose, route and days of the course": "UNKNOWN",
        "Current conditions no check assessed": "to confirm",
    },
    "rx-sign": {
        "Varicella-zoster immunity": "UNKNOWN",
        "Dose, route and days of the course": "UNKNOWN",
        "Corticosteroid premedication on days 1-3": "NOT MET",
        "Antiviral herpes prophylaxis from day 1": "NOT MET",
        "Current conditions no check assessed": "to confirm",
    },
}


MONITORED = "treated_patient_with_cbc_overdue_gets_the_work_up_card"
"""The monitoring table's row opened on the Patient View: a course ended 91 days ago, the last
CBC 50 days ago (monthly), everything else on time."""
MONITORING_CHECKLIST = "monitoring continues until"
"""In the monitoring checklist card's summary, whatever it found."""


def monitored_patient() -> tuple[dict[str, Any], str]:
    """The patient-view request of MONITORED built with today (UTC, as the service reads it) as
    its day, so that its results are as old as the row says whenever the test runs; and the
    summary the clinician should see at the top of the checklist card."""
    root = Path(__file__).resolve().parents[1] / "fhir_fixtures"
    spec = importlib.util.spec_from_file_location("build_requests", root / "build_requests.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    today = datetime.now(UTC).date()
    (row,) = [r for r in builder.load_monitoring_scenarios() if r["name"] == MONITORED]
    request_json = builder.build_monitoring_request({**row, "today": today.isoformat()})
    ends = add_months(today.fromordinal(today.toordinal() - 91), 48)
    summary = (
        f"Lemtrada monitoring: 1 of {len(MONITORING_RULES)} checks needs attention; "
        f"{MONITORING_CHECKLIST} {ends.isoformat()}"
    )
    return request_json, summary


QUIET = ("met", "not applicable")
"""Checklist statuses that are no problem (a first course: the later-course checks do not apply)."""


@dataclass
class Screen:
    """What one Sandbox screen showed the clinician once the service's cards arrived."""

    summaries: list[str]
    checklist_headers: list[str]
    checklist: dict[str, str]
    """check title (the Check column) -> Status, in table order."""
    checklist_text: str
    overridden_card_left: bool = False


@dataclass
class Journey:
    """The servers of one journey and everything the tests read back from it."""

    service_url: str
    database_url: str
    log: Path
    fhir: SandboxFhirServer
    screens: dict[str, Screen] = field(default_factory=dict)
    feedback_status: list[int] = field(default_factory=list)
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    """The service's JSON log lines, as they stood at the end of the journey."""
    monitored: SandboxFhirServer | None = None
    """The FHIR server of the patient opened on the Patient View."""
    monitoring_summary: str = ""
    """The monitoring checklist card's summary the clinician should see."""


# -- the servers ---------------------------------------------------------------------------------


def sandbox_available() -> str | None:
    """Why the test cannot run here, or None."""
    if not (SANDBOX_DIR / "index.html").is_file() or not SANDBOX_JWKS.is_file():
        return f"the prebuilt CDS Hooks Sandbox is not at {SANDBOX_DIR}"
    if why_no_chromium():
        return why_no_chromium()
    return None


def start_service(tmp: Path, sandbox_origin: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`cds-service serve` with authentication on, trusting the Sandbox issuer (tests only)."""
    issuers = tmp / "trusted-issuers.json"
    issuers.write_text(
        json.dumps(
            [
                {
                    "iss": SANDBOX_ISSUER,
                    "jwks_file": str(SANDBOX_JWKS),
                    "allowed_jku": [SANDBOX_JKU],
                    "algorithms": ["ES384"],
                }
            ]
        ),
        encoding="utf-8",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        {
            "CDS_PUBLIC_BASE_URL": url,  # the JWT aud is the exact URL the Sandbox calls
            "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
            "CDS_DATABASE_URL": f"sqlite:///{tmp}/service.sqlite3",
            "CDS_STATE_DIR": str(tmp / "state"),
            "CDS_CORS_ALLOWED_ORIGINS": sandbox_origin,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        }
    )
    log = tmp / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(
            process, url + "/readyz", timeout=60, why_exited=lambda: log.read_text(errors="replace")
        )
    except BaseException:
        stop(process)
        raise
    return process, url, log


# -- the clinician's journey ---------------------------------------------------------------------


def card(page: Any, summary: str) -> Any:
    """The card whose summary (its bold first line) contains `summary`."""
    return page.locator(CARD).filter(has=page.locator(SUMMARY_IN_CARD, has_text=summary))


def read_screen(page: Any, checklist: str = CHECKLIST) -> Screen:
    """The card summaries and the checklist table, as rendered."""
    checklist_card = card(page, checklist)
    rows: dict[str, str] = {}
    for row in checklist_card.locator("table tbody tr").all():
        cells = row.locator("td")
        rows[cells.nth(0).inner_text().strip()] = cells.nth(1).inner_text().strip()
    return Screen(
        summaries=[s.strip() for s in page.locator(f"{CARD} {SUMMARY_IN_CARD}").all_inner_texts()],
        checklist_headers=[h.strip() for h in checklist_card.locator("table th").all_inner_texts()],
        checklist=rows,
        checklist_text=checklist_card.inner_text(),
    )


def override(page: Any, journey: Journey, service_id: str, summary: str, reason: str) -> bool:
    """Choose an override reason from the card's menu; True when the card then leaves the screen."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    shown = card(page, summary)
    shown.get_by_role("button", name="select dismiss reason").click()
    with page.expect_response(
        lambda r: (
            r.request.method == "POST"
            and r.url == f"{journey.service_url}/cds-services/{service_id}/feedback"
        )
    ) as feedback:
        page.get_by_role("menuitem", name=f"Override: {reason}").click()
    journey.feedback_status.append(feedback.value.status)
    try:
        shown.wait_for(state="detached", timeout=30_000)
    except PlaywrightTimeout:
        return False
    return True


def walk_through(page: Any, journey: Journey, screenshots: Path) -> None:
    """Rx View, then Rx Sign, as a prescriber would."""
    from playwright.sync_api import expect

    picker = card(page, PICKER_CARD)
    picker.wait_for()  # the patient is loaded and the services were called
    page.wait_for_load_state("networkidle")  # no older hook answer still on its way
    page.get_by_role("button", name="CDS Developer Panel").click()  # the clinician's view only
    page.get_by_label("Start Date").click()
    page.keyboard.type(PLANNED_START)
    expect(page.get_by_label("Start Date")).to_have_value("12/07/2026", timeout=TIMEOUT_MS)
    picker.get_by_role("button", name="Order Lemtrada").click()
    expect(card(page, CHECKLIST)).to_have_count(1, timeout=TIMEOUT_MS)
    expect(picker).to_have_count(0, timeout=TIMEOUT_MS)
    screen = read_screen(page)
    page.screenshot(path=str(screenshots / "rx-view.png"))
    card(page, CHECKLIST).screenshot(path=str(screenshots / "rx-view-checklist.png"))
    with page.expect_response(
        lambda r: (
            r.request.method == "POST"
            and r.url == (f"{journey.service_url}/cds-services/lemtrada-order-select/feedback")
        )
    ) as feedback:
        card(page, "Work-up before starting Lemtrada").get_by_role(
            "button", name="Order VZV IgG"
        ).click()
    journey.feedback_status.append(feedback.value.status)
    screen.overridden_card_left = override(
        page,
        journey,
        "lemtrada-order-select",
        "not readable as mg",
        "Recipient disagrees with recommendation because of issues with the evidence",
    )
    journey.screens["rx-view"] = screen

    page.get_by_role("button", name="Rx Sign").click()
    page.get_by_role("button", name="Sign Order").click()
    expect(card(page, CHECKLIST)).to_have_count(1, timeout=TIMEOUT_MS)
    screen = read_screen(page)
    page.screenshot(path=str(screenshots / "rx-sign.png"))
    screen.overridden_card_left = override(
        page,
        journey,
        "lemtrada-order-sign",
        "infusion-day orders to complete",
        "Patient has indication/order for intended action",
    )
    journey.screens["rx-sign"] = screen


def open_patient_view(page: Any, url: str, journey: Journey, screenshots: Path) -> None:
    """The Patient View of the monitored patient: the monitoring cards arrive by themselves."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(card(page, MONITORING_CHECKLIST)).to_have_count(1, timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    screen = read_screen(page, MONITORING_CHECKLIST)
    page.screenshot(path=str(screenshots / "patient-view.png"))
    journey.screens["patient-view"] = screen


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    why_not = sandbox_available()
    if why_not:
        pytest.skip(why_not)
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("sandbox")
    request_json = fixture_request(FIXTURE)
    fhir = SandboxFhirServer(request_json)
    monitored_json, monitoring_summary = monitored_patient()
    monitored = SandboxFhirServer(monitored_json)
    picker = LemtradaPicker()
    site = StaticSite(SANDBOX_DIR)
    started: list[Callable[[], None]] = []
    process: subprocess.Popen[bytes] | None = None
    try:
        for server in (fhir, monitored, picker, site):
            server.start()
            started.append(server.stop)
        process, service_url, log = start_service(tmp, site.origin)
        result = Journey(
            service_url,
            f"sqlite:///{tmp}/service.sqlite3",
            log,
            fhir,
            monitored=monitored,
            monitoring_summary=monitoring_summary,
        )
        url = sandbox_url(
            site.origin,
            fhir.base_url,
            fhir.patient_id,
            [f"{service_url}/cds-services", picker.discovery_url],
            "rx-view",
        )
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                context = browser.new_context(
                    locale="en-US", viewport={"width": 1280, "height": 1600}
                )

                def local_only(route: Any) -> None:
                    if urlsplit(route.request.url).hostname == "127.0.0.1":
                        route.continue_()
                    else:  # e.g. the Sandbox's default discovery endpoint
                        route.abort()

                context.route("**/*", local_only)
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(url)
                walk_through(page, result, tmp)
                patient_view = sandbox_url(
                    site.origin,
                    monitored.base_url,
                    monitored.patient_id,
                    [f"{service_url}/cds-services", picker.discovery_url],
                    "patient-view",
                )
                open_patient_view(page, patient_view, result, tmp)
            finally:
                browser.close()
        result.log_lines = read_log(log)
        yield result
    finally:
        if process is not None:
            stop(process)
        for stop_server in reversed(started):
            stop_server()


def read_log(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def feedback_report(
    journey: Journey, wanted: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:
    """`cds-service feedback-report --json` by topic, read again until `wanted` (the card audit
    is written in the background) or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "feedback-report",
                "--json",
                "--database-url",
                journey.database_url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        doc = json.loads(done.stdout)
        report = {t["topic"]: t for t in doc["topics"]}
        report.update({f"check {c['check']}": c for c in doc["checks"]})
        if wanted(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


# -- what the clinician saw ----------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize(
    "screen",
    [
        pytest.param(
            "rx-view", id="Rx View (order-select) shows the work-up, review and summary cards"
        ),
        pytest.param("rx-sign", id="Rx Sign (order-sign) adds the infusion-day orders card"),
    ],
)
def test_the_clinician_sees_the_card_summaries(journey: Journey, screen: str) -> None:
    assert journey.screens[screen].summaries == EXPECTED_CARDS[screen]


@pytest.mark.browser
def test_the_patient_view_shows_the_monitoring_cards(journey: Journey) -> None:
    """Opening the chart of a patient treated three months ago whose monthly CBC is overdue:
    the work-up card ordering it, then the monitoring checklist: a table whose only problem is the
    CBC, the checks up to date named on one line after it."""
    seen = journey.screens["patient-view"]
    assert seen.summaries == [
        "Lemtrada monitoring: CBC with differential overdue (monthly until 48 months after the "
        "last infusion)",
        journey.monitoring_summary,
    ]
    assert seen.checklist_headers == ["Monitoring", "Date", "Check", "Status", "Finding"]
    policy = load_policy()
    titles = [rule.titled(policy) for rule in MONITORING_RULES]
    rows = {title: status for title, status in seen.checklist.items() if title in titles}
    assert {t: s for t, s in rows.items() if s not in QUIET} == {
        "CBC with differential every month until 48 months after the last infusion": "NOT MET"
    }
    up_to_date = [title for title in titles if title not in rows]  # named on one line
    assert f"Checks up to date ({len(up_to_date)}):" in seen.checklist_text
    assert all(title in seen.checklist_text for title in up_to_date)
    assert "|---|" not in seen.checklist_text and "**" not in seen.checklist_text


@pytest.mark.browser
@pytest.mark.parametrize(
    "screen",
    [
        pytest.param("rx-view", id="on Rx View"),
        pytest.param("rx-sign", id="on Rx Sign"),
    ],
)
def test_the_checklist_is_rendered_as_a_table_with_every_check(
    journey: Journey, screen: str
) -> None:
    """The markdown table became an HTML table: a header, a row per check not met (problems
    first and marked), then the met checks named on one line: every check is on the screen."""
    seen = journey.screens[screen]
    checks = int(EXPECTED_CARDS[screen][-1].split(" of ")[1].split()[0])
    assert seen.checklist_headers == ["Check", "Status", "Finding"]
    problems = EXPECTED_PROBLEMS[screen]
    assert dict(list(seen.checklist.items())[: len(problems)]) == problems
    assert {t: s for t, s in seen.checklist.items() if s not in QUIET} == problems
    quiet = sum(1 for s in seen.checklist.values() if s in QUIET)
    met = checks - len(problems) - quiet
    assert f"Checks met ({met}): Patient not recorded as deceased;" in seen.checklist_text
    assert "|---|" not in seen.checklist_text and "**" not in seen.checklist_text
    assert "Planned first infusion: 2026-12-07 (dosage timing start)." in seen.checklist_text


@pytest.mark.browser
@pytest.mark.parametrize(
    "screen",
    [
        pytest.param("rx-view", id="the dose card, overridden on Rx View"),
        pytest.param("rx-sign", id="the premedication card, overridden on Rx Sign"),
    ],
)
def test_an_overridden_card_leaves_the_screen(journey: Journey, screen: str) -> None:
    assert journey.screens[screen].overridden_card_left


# -- what reached the service ----------------------------------------------------------------------


FEEDBACK = [
    pytest.param("pretreatment-workup", 1, 0, {}, id="the VZV IgG suggestion was accepted"),
    pytest.param(
        "review-before-start",
        0,
        1,
        {"recipient-disagrees-evidence": 1},
        id="the review card (dose) was overridden with the reason chosen on Rx View",
    ),
    pytest.param(
        "infusion-day-orders",
        0,
        1,
        {"indication-order-exists": 1},
        id="the infusion-day orders card was overridden with the reason chosen on Rx Sign",
    ),
]
CARD_TOPICS = ("pretreatment-workup", "review-before-start", "infusion-day-orders")


@pytest.mark.browser
@pytest.mark.parametrize(("topic", "accepted", "overridden", "reasons"), FEEDBACK)
def test_the_clinicians_actions_reach_the_feedback_store(
    journey: Journey, topic: str, accepted: int, overridden: int, reasons: dict[str, int]
) -> None:
    """Read back with `cds-service feedback-report`, joined to the cards the service issued."""

    def complete(report: dict[str, Any]) -> bool:
        return all(t in report for t in CARD_TOPICS)

    report = feedback_report(journey, complete)
    assert "(unknown card)" not in report
    row = report[topic]
    assert row["issued"] >= 1
    assert (row["accepted"], row["overridden"]) == (accepted, overridden)
    assert {key.split(" (")[0]: n for key, n in row["overrideReasons"].items()} == reasons


@pytest.mark.browser
def test_the_suggestion_taken_is_counted_for_its_check(journey: Journey) -> None:
    """The VZV IgG ordered from the work-up card is counted for the vzv-immunity check."""
    report = feedback_report(journey, lambda r: "check vzv-immunity" in r)
    assert report["check vzv-immunity"]["suggestionsTaken"] == 1


@pytest.mark.browser
def test_the_sandbox_prefetched_every_template_through_the_fhir_server(journey: Journey) -> None:
    """The Sandbox answered the service's prefetch templates with `POST {Type}/_search` to the
    FHIR server, and the service built its cards from that prefetch alone."""
    templates = {
        "lemtrada-order-select": prefetch_templates(),
        "lemtrada-order-sign": prefetch_templates(),
        "lemtrada-monitoring": monitoring_prefetch_templates(),
    }
    searched = {query.split("?")[0] for query in prefetch_templates().values() if "?" in query}
    assert searched <= journey.fhir.searched_types()
    assert journey.monitored is not None
    monitoring = monitoring_prefetch_templates().values()
    assert {q.split("?")[0] for q in monitoring if "?" in q} <= journey.monitored.searched_types()
    with_cards = [
        line
        for line in journey.log_lines
        if line.get("message") == "hook answered" and line.get("topics")
    ]
    assert {line["service"] for line in with_cards} == set(templates)
    for line in with_cards:
        assert line["dataOrigin"] == {key: "prefetch" for key in templates[line["service"]]}


@pytest.mark.browser
def test_every_sandbox_call_carried_a_token_the_service_accepted(journey: Journey) -> None:
    """Authentication was on: the Sandbox's ES384 tokens (discovery, hooks, feedback) were
    verified with the pinned key and none was refused, while the same calls without a token
    are refused."""
    refused = [line for line in journey.log_lines if line.get("message") == "EHR token refused"]
    assert refused == []
    assert journey.feedback_status == [200, 200, 200]
    discovery = requests.get(f"{journey.service_url}/cds-services", timeout=10)
    unsigned = requests.post(
        f"{journey.service_url}/cds-services/lemtrada-order-select",
        json=fixture_request(FIXTURE),
        timeout=10,
    )
    assert (discovery.status_code, unsigned.status_code) == (401, 401)
