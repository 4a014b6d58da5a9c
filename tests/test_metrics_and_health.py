"""Operations endpoints: /healthz, /readyz, and Prometheus /metrics, in process and under gunicorn.

Metric tests read the exposition text the way Prometheus does (prometheus_client's parser) and
compare counts before and after real calls, since counters live for the whole test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir_stub_server import FhirStub, without_prefetch
from fixture_requests import fixture_request
from jwt_keys import claims, ec_key, jwks
from prometheus_client.parser import text_string_to_metric_families
from served import free_port, stop, wait_until_serving

from cds_service.app import create_app
from cds_service.auth import REASONS
from cds_service.cli import prepare_metrics_dir
from cds_service.services import prefetch_templates

ROOT = Path(__file__).resolve().parents[1]
SELECT = "/cds-services/lemtrada-order-select"
FEEDBACK = SELECT + "/feedback"
UNREACHABLE_DB = "sqlite:////dev/null/not-a-folder/cds.sqlite3"


def samples(client: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics as {(name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    snapshot: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return snapshot.get((name, frozenset(labels.items())), 0.0)


# --- health -------------------------------------------------------------------------------------

PROBES = [
    ("liveness answers while the database is down", "/healthz", UNREACHABLE_DB, 200, "ok"),
    ("readiness answers 200 with a working database", "/readyz", "sqlite://", 200, "ready"),
    (
        "readiness answers 503 while the database is unreachable",
        "/readyz",
        UNREACHABLE_DB,
        503,
        "not ready",
    ),
]


@pytest.mark.parametrize("case,path,database_url,status,state", PROBES, ids=[p[0] for p in PROBES])
def test_health_probes(case: str, path: str, database_url: str, status: int, state: str) -> None:
    """Liveness never depends on the database; readiness does, and says which check failed."""
    client = create_app(testing=True, database_url=database_url).test_client()
    response = client.get(path)
    assert response.status_code == status
    body = response.get_json()
    assert body["status"] == state
    if path == "/readyz":
        assert body["checks"]["valueSets"]["ok"] is True
        assert body["checks"]["warm"]["ok"] is True
        assert body["checks"]["database"]["ok"] is (status == 200)


def test_probes_and_metrics_need_no_token_but_the_api_does(tmp_path: Path) -> None:
    """With EHR authentication on, a load balancer and Prometheus still reach the probes."""
    key = ec_key("probe")
    app = create_app(
        database_url=f"sqlite:///{tmp_path}/db.sqlite3",
        trusted_issuers_json=json.dumps([{"iss": "https://ehr.example.org", "jwks": jwks(key)}]),
    )
    client = app.test_client()
    assert {
        path: client.get(path).status_code
        for path in ("/healthz", "/readyz", "/metrics", "/cds-services")
    } == {"/healthz": 200, "/readyz": 200, "/metrics": 200, "/cds-services": 401}


# --- metrics in process -----------------------------------------------------------------------


def test_cards_are_counted_by_service_topic_and_indicator() -> None:
    """Each returned card adds one to cds_cards_total for its topic and indicator; latency too."""
    client = create_app(testing=True).test_client()
    before = samples(client)
    response = client.post(SELECT, json=fixture_request("hiv_test_positive"))
    cards = response.get_json()["cards"]
    after = samples(client)
    expected: dict[tuple[str, str], int] = {}
    for card in cards:
        key = (card["source"]["topic"]["code"], card["indicator"])
        expected[key] = expected.get(key, 0) + 1
    assert ("hiv-screening", "critical") in expected
    for (topic, indicator), count in expected.items():
        labels = {"service": "lemtrada-order-select", "topic": topic, "indicator": indicator}
        assert (
            value(after, "cds_cards_total", **labels) - value(before, "cds_cards_total", **labels)
            == count
        )
    latency = {"service": "lemtrada-order-select", "status": "200"}
    assert (
        value(after, "cds_hook_request_duration_seconds_count", **latency)
        - value(before, "cds_hook_request_duration_seconds_count", **latency)
        == 1
    )
    assert value(after, "cds_prefetch_keys_total", origin="prefetch") - value(
        before, "cds_prefetch_keys_total", origin="prefetch"
    ) == len(prefetch_templates())


def test_fhir_server_fetches_and_failures_are_counted(stubs: Callable[..., FhirStub]) -> None:
    """Keys fetched from the FHIR server count as ok; a server refusing the token, as failed."""
    full = fixture_request("eligible_patient_at_order_select")
    good, refusing = stubs(full), stubs(full, fault="401")
    client = create_app(
        testing=True,
        fhir_server_allowlist=(good.base_url, refusing.base_url),
        http_allowed_hosts=("127.0.0.1",),
    ).test_client()
    before = samples(client)
    assert (
        client.post(SELECT, json=without_prefetch(full, good.base_url, "stub-token")).status_code
        == 200
    )
    assert (
        client.post(
            SELECT, json=without_prefetch(full, refusing.base_url, "stub-token")
        ).status_code
        == 412
    )
    after = samples(client)
    delta = {
        outcome: value(after, "cds_fhir_fetches_total", outcome=outcome)
        - value(before, "cds_fhir_fetches_total", outcome=outcome)
        for outcome in ("ok", "failed", "unfinished")
    }
    keys = len(prefetch_templates())
    assert delta["ok"] == keys
    assert delta["failed"] >= 1 and delta["failed"] + delta["unfinished"] == keys
    assert (
        value(after, "cds_prefetch_keys_total", origin="fhir-server")
        - value(before, "cds_prefetch_keys_total", origin="fhir-server")
        == keys
    )


def test_prefetched_first_pages_completed_from_the_fhir_server_are_counted_apart(
    stubs: Callable[..., FhirStub],
) -> None:
    """A prefetch key whose next pages came from the FHIR server counts as fhir-server-paged,
    not prefetch (it was parsed back from a free string as prefetch before)."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    client = create_app(
        testing=True, fhir_server_allowlist=(stub.base_url,), http_allowed_hosts=("127.0.0.1",)
    ).test_client()
    paged = json.loads(json.dumps(full))
    paged["prefetch"]["conditions"] = stub.first_page("Condition", full["context"]["patientId"], 1)
    paged |= {
        "fhirServer": stub.base_url,
        "fhirAuthorization": without_prefetch(full, stub.base_url)["fhirAuthorization"],
    }
    before = samples(client)
    assert client.post(SELECT, json=paged).status_code == 200
    after = samples(client)
    delta = {
        origin: value(after, "cds_prefetch_keys_total", origin=origin)
        - value(before, "cds_prefetch_keys_total", origin=origin)
        for origin in ("prefetch", "prefetch-null", "fhir-server", "fhir-server-paged")
    }
    assert delta == {
        "prefetch": len(prefetch_templates()) - 1,
        "prefetch-null": 0,
        "fhir-server": 0,
        "fhir-server-paged": 1,
    }


def feedback_body(card: str, outcome: str = "overridden") -> dict[str, Any]:
    return {
        "feedback": [{"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-21T10:00:00Z"}]
    }


def test_feedback_outcomes_are_counted() -> None:
    """Stored, duplicate, invalid and unavailable feedback each have their own count."""
    healthy = create_app(testing=True).test_client()
    down = create_app(testing=True, database_url=UNREACHABLE_DB).test_client()
    before = samples(healthy)
    card = str(uuid.uuid4())
    statuses = [
        healthy.post(FEEDBACK, json=feedback_body(card)).status_code,
        healthy.post(FEEDBACK, json=feedback_body(card)).status_code,
        healthy.post(FEEDBACK, json={"feedback": "no"}).status_code,
        down.post(FEEDBACK, json=feedback_body(str(uuid.uuid4()))).status_code,
    ]
    after = samples(healthy)
    assert statuses == [200, 200, 400, 503]
    assert {
        outcome: value(after, "cds_feedback_total", outcome=outcome)
        - value(before, "cds_feedback_total", outcome=outcome)
        for outcome in ("stored", "duplicate", "invalid", "unavailable")
    } == {"stored": 1, "duplicate": 1, "invalid": 1, "unavailable": 1}


def test_auth_failures_are_counted_by_reason(tmp_path: Path) -> None:
    """Every refusal reason (REASONS) is a series from the start; refusals add to their own
    reason."""
    key = ec_key("metrics")
    base = "https://cds.example.org"
    app = create_app(
        public_base_url=base,
        database_url=f"sqlite:///{tmp_path}/db.sqlite3",
        trusted_issuers_json=json.dumps([{"iss": "https://ehr.example.org", "jwks": jwks(key)}]),
    )
    client = app.test_client()
    before = samples(client)
    assert {
        reason
        for reason in REASONS
        if ("cds_auth_failures_total", frozenset({("reason", reason)})) in before
    } == set(REASONS)
    token = key.sign(claims("https://ehr.example.org", base + "/cds-services", time.time()))
    headers = {"Authorization": f"Bearer {token}"}
    codes = [
        client.get("/cds-services", headers=headers).status_code,
        client.get("/cds-services", headers=headers).status_code,
        client.get("/cds-services").status_code,
    ]
    after = samples(client)
    assert codes == [200, 401, 401]
    assert {
        reason: value(after, "cds_auth_failures_total", reason=reason)
        - value(before, "cds_auth_failures_total", reason=reason)
        for reason in ("replay", "missing-header", "expired")
    } == {"replay": 1, "missing-header": 1, "expired": 0}


def test_dropped_audit_rows_are_counted() -> None:
    """With the database down, hooks still answer and the dropped audit rows are counted."""
    app = create_app(testing=True, database_url=UNREACHABLE_DB)
    client = app.test_client()
    before = samples(client)
    response = client.post(SELECT, json=fixture_request("hiv_test_positive"))
    assert response.status_code == 200
    app.extensions["cds_audit"].flush()
    after = samples(client)
    dropped = value(after, "cds_card_audit_dropped_total") - value(
        before, "cds_card_audit_dropped_total"
    )
    assert dropped == len(response.get_json()["cards"]) == app.extensions["cds_audit"].dropped


# --- under gunicorn: metrics summed over worker processes --------------------------------------


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`cds-service serve --workers 2` on a free port; yields (base URL, stderr log file)."""
    port = free_port()
    log_path = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["CDS_DATABASE_URL"] = f"sqlite:///{tmp_path}/db.sqlite3"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "serve",
                "--no-auth",
                "--workers",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base + "/readyz", why_exited=log_path.read_text)
        yield base, log_path
    finally:
        stop(proc)


@pytest.mark.slow
def test_metrics_under_gunicorn_sum_every_worker(gunicorn_server: tuple[str, Path]) -> None:
    """Calls answered by two different workers are all counted, whichever worker is scraped."""
    base, log_path = gunicorn_server
    body = json.dumps(fixture_request("hiv_test_positive")).encode()
    calls = 40

    def call(_: int) -> int:
        with requests.Session() as session:  # a new connection per call: spread over workers
            return session.post(
                base + SELECT, data=body, timeout=30, headers={"Content-Type": "application/json"}
            ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(call, range(calls))) == {200}
    counts = set()
    for _ in range(6):
        text = requests.get(base + "/metrics", timeout=10).text
        counts.add(
            next(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "cds_hook_request_duration_seconds_count"
                and s.labels == {"service": "lemtrada-order-select", "status": "200"}
            )
        )
    assert counts == {calls}
    answered = [
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if line.startswith("{") and '"hook answered"' in line
    ]
    assert len(answered) == calls
    assert len({line["process"] for line in answered}) == 2, "both workers must have answered"


def test_serve_empties_a_given_metrics_folder_of_a_previous_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Samples left by an earlier server run are removed, so counters restart from zero."""
    folder = Path(tempfile.mkdtemp(prefix="cds-metrics-test-"))
    (folder / "counter_1234.db").write_bytes(b"stale")
    (folder / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    assert prepare_metrics_dir() == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
