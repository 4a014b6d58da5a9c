"""Warm before the first patient (issue 10, item 4): a freshly created app has already built
what a hook call would otherwise build on first use, and /readyz says so.

The first test runs in a fresh interpreter (this test process is long warm): create the app,
probe /readyz as an orchestrator does, then post every fixture request; no call may import a
module (fhir.resources loads an R4B model by importing it) or fill one of the service's caches.
No timing here: bench/bench.py --only first-call measures the latency.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cds_service.cards
import cds_service.warmup
from cds_service.app import create_app

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = ROOT / "fhir_fixtures" / "requests"

FRESH_PROCESS = """
import json, pathlib, sys, threading
from cds_service.app import create_app
from cds_service.cards import _override_displays
from cds_service.domain.policy import load_policy
from cds_service.domain.terminology import all_value_sets
from cds_service.models import _model
from cds_service.services import prefetch_templates

CACHES = {"value sets": all_value_sets, "policy": load_policy,
          "prefetch templates": prefetch_templates, "R4B model classes": _model,
          "card override reasons": _override_displays}
app = create_app(testing=True)
client = app.test_client()
ready = client.get("/readyz")
threads = sorted(t.name for t in threading.enumerate())
misses = {name: cache.cache_info().misses for name, cache in CACHES.items()}
imported, statuses = {}, {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    request = json.loads(path.read_text(encoding="utf-8"))
    before = set(sys.modules)
    response = client.post(f"/cds-services/lemtrada-{request['hook']}", json=request)
    app.extensions["cds_audit"].flush()
    statuses[path.stem] = response.status_code
    new = sorted(set(sys.modules) - before)
    if new:
        imported[path.stem] = new
print(json.dumps({
    "ready": [ready.status_code, ready.get_json()],
    "threads before the first call": threads,
    "statuses": statuses,
    "imported": imported,
    "filled by hook calls": {name: cache.cache_info().misses - misses[name]
                             for name, cache in CACHES.items()},
}))
"""


@pytest.fixture(scope="module")
def fresh_process() -> dict[str, Any]:
    """What a fresh interpreter saw: readiness, then every fixture request posted in turn."""
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(REQUESTS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.slow
def test_a_fresh_app_is_ready_and_warm(fresh_process: dict[str, Any]) -> None:
    """/readyz of a just-created app answers 200 with the warm-up done."""
    status, body = fresh_process["ready"]
    assert status == 200, body
    assert body["checks"]["warm"]["ok"] is True
    assert "synthetic requests evaluated" in body["checks"]["warm"]["detail"]


@pytest.mark.slow
def test_the_card_audit_writer_runs_before_the_first_call(fresh_process: dict[str, Any]) -> None:
    """The first patient's call does not wait for the audit writer thread to start."""
    assert "card-audit" in fresh_process["threads before the first call"]


@pytest.mark.slow
def test_no_hook_call_to_a_fresh_app_imports_a_module(fresh_process: dict[str, Any]) -> None:
    """Every fixture request, first of all: no R4B model (or anything else) is loaded on a
    patient's call."""
    assert len(fresh_process["statuses"]) == len(list(REQUESTS.glob("*.json")))
    assert 500 not in fresh_process["statuses"].values()
    assert fresh_process["imported"] == {}


@pytest.mark.slow
def test_no_hook_call_to_a_fresh_app_fills_a_cache(fresh_process: dict[str, Any]) -> None:
    """Value sets, policy, prefetch templates, model classes and card wording were all built by
    create_app: the hook calls only read them."""
    filled = fresh_process["filled by hook calls"]
    assert filled == dict.fromkeys(filled, 0)
    assert len(filled) == 5


def unreadable_card_wording() -> dict[str, str]:
    raise FileNotFoundError("terminology/CodeSystem-non-adherence-reason-codes.json")


READINESS_CASES = [
    pytest.param(
        None, 200, "ready", True, id="the warm-up evaluated its synthetic requests: ready"
    ),
    pytest.param(
        unreadable_card_wording,
        503,
        "not ready",
        False,
        id="the card wording cannot be read (package data missing): not ready",
    ),
]


@pytest.mark.parametrize(("break_cards", "status", "state", "warm"), READINESS_CASES)
def test_readiness_reports_the_warm_up(
    monkeypatch: pytest.MonkeyPatch,
    break_cards: Callable[[], dict[str, str]] | None,
    status: int,
    state: str,
    warm: bool,
) -> None:
    """An engine that cannot answer its own synthetic request is not ready (while liveness still
    answers), instead of a 500 for the first real patient."""
    monkeypatch.setattr(cds_service.warmup, "_done", None)  # warm up again in this process
    if break_cards is not None:
        monkeypatch.setattr(cds_service.cards, "_override_displays", break_cards)
    client = create_app(testing=True).test_client()
    response = client.get("/readyz")
    assert response.status_code == status
    body = response.get_json()
    assert body["status"] == state
    assert body["checks"]["warm"]["ok"] is warm
    if not warm:
        assert body["checks"]["warm"]["detail"] == "failed (FileNotFoundError)"
    assert client.get("/healthz").status_code == 200
