"""State in one known place: the default database lives in the state folder, never in the folder a
command happens to start in, and the commands say which database they use (issue 10, item 3).

Before, the default was `sqlite:///var/cds_service.sqlite3`, relative to the current folder: run
from another folder, `feedback-report` silently made a new empty database and reported no cards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from fixture_requests import fixture_request
from served import free_port, stop, wait_until_serving

from cds_service.config import Settings
from cds_service.storage import database_name

WHEN = "2026-01-12T10:05:31Z"

# case, environment (HOME is the test's home folder, XDG_STATE_HOME a folder under it),
# the expected state folder and database URL ("~" is the home folder).
SETTINGS = [
    (
        "nothing set: the per-user state folder under ~/.local/state",
        {},
        "~/.local/state/cds-service",
        "sqlite:///~/.local/state/cds-service/cds_service.sqlite3",
    ),
    (
        "XDG_STATE_HOME set: the cds-service folder in it",
        {"XDG_STATE_HOME": "~/xdg"},
        "~/xdg/cds-service",
        "sqlite:///~/xdg/cds-service/cds_service.sqlite3",
    ),
    (
        "a relative XDG_STATE_HOME is ignored, as the XDG specification asks",
        {"XDG_STATE_HOME": "xdg"},
        "~/.local/state/cds-service",
        "sqlite:///~/.local/state/cds-service/cds_service.sqlite3",
    ),
    (
        "CDS_STATE_DIR names the state folder",
        {"CDS_STATE_DIR": "~/srv/cds"},
        "~/srv/cds",
        "sqlite:///~/srv/cds/cds_service.sqlite3",
    ),
    (
        "CDS_DATABASE_URL wins over the state folder's database",
        {"CDS_STATE_DIR": "~/srv/cds", "CDS_DATABASE_URL": "postgresql+psycopg://cds@db/cds"},
        "~/srv/cds",
        "postgresql+psycopg://cds@db/cds",
    ),
]


def clean_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for name in [n for n in os.environ if n.startswith("CDS_")] + ["XDG_STATE_HOME"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))


@pytest.mark.parametrize("case,env,state_dir,database_url", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_the_default_database_is_in_the_state_folder_whatever_the_current_folder(
    case: str,
    env: dict[str, str],
    state_dir: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings name the same absolute state folder and database from any current folder."""
    home = tmp_path / "home"
    clean_environment(monkeypatch, home)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("~", str(home)))
    seen = set()
    for folder in (tmp_path / "a", tmp_path / "b" / "deeper"):
        folder.mkdir(parents=True)
        monkeypatch.chdir(folder)
        settings = Settings.from_env()
        seen.add((settings.state_dir, settings.database_url))
    assert seen == {(state_dir.replace("~", str(home)), database_url.replace("~", str(home)))}


NAMES = [
    (
        "a password is hidden",
        "postgresql+psycopg://cds:s3cret@db.internal:5432/cds",
        "postgresql+psycopg://cds:***@db.internal:5432/cds",
    ),
    (
        "a relative SQLite file is named by its absolute path",
        "sqlite:///var/x.sqlite3",
        "sqlite:///{cwd}/var/x.sqlite3",
    ),
    (
        "an absolute SQLite file is named as it is",
        "sqlite:////srv/cds/x.sqlite3",
        "sqlite:////srv/cds/x.sqlite3",
    ),
    ("an in-memory database is named as it is", "sqlite://", "sqlite://"),
]


@pytest.mark.parametrize("case,url,shown", NAMES, ids=[n[0] for n in NAMES])
def test_the_database_is_named_without_credentials(
    case: str, url: str, shown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_name(url) == shown.replace("{cwd}", str(tmp_path))


def commands_env(home: Path) -> dict[str, str]:
    """No CDS_ setting and no XDG_STATE_HOME: the defaults alone decide where state goes."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CDS_", "PROMETHEUS_")) and k != "XDG_STATE_HOME"
    }
    env["HOME"] = str(home)
    return env


def feedback_report(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "feedback-report", "--json"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_serve_and_feedback_report_from_different_folders_use_and_name_the_same_database(
    tmp_path: Path,
) -> None:
    """`serve` started in one folder records cards and feedback; `feedback-report` run in another
    folder reads them back. Both name the database in the state folder; neither folder gets a
    file."""
    home = tmp_path / "home"
    serve_folder, report_folder = tmp_path / "serve-here", tmp_path / "report-here"
    for folder in (home, serve_folder, report_folder):
        folder.mkdir()
    env = commands_env(home)
    database = home / ".local" / "state" / "cds-service" / "cds_service.sqlite3"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "serve",
                "--no-auth",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=serve_folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_until_serving(proc, base + "/readyz", why_exited=lambda: log.read_text()[-3000:])
            request = fixture_request("tb_screening_missing")
            cards = requests.post(
                f"{base}/cds-services/lemtrada-{request['hook']}", json=request, timeout=30
            ).json()["cards"]
            tb_card = next(
                c for c in cards if c["source"]["topic"]["code"] == "pretreatment-workup"
            )
            feedback = {
                "feedback": [
                    {
                        "card": tb_card["uuid"],
                        "outcome": "overridden",
                        "overrideReason": {"userComment": "IGRA sent today"},
                        "outcomeTimestamp": WHEN,
                    }
                ]
            }
            stored = requests.post(
                f"{base}/cds-services/lemtrada-{request['hook']}/feedback",
                json=feedback,
                timeout=30,
            )
            assert stored.status_code == 200
            # The issued-card audit is written off the request path: wait for it (generously).
            deadline = time.monotonic() + 30
            while True:
                report = feedback_report(report_folder, env)
                assert report.returncode == 0, report.stderr
                topics = {t["topic"]: t for t in json.loads(report.stdout)["topics"]}
                if (
                    topics.get("pretreatment-workup", {}).get("issued")
                    or time.monotonic() > deadline
                ):
                    break
                time.sleep(0.2)
        finally:
            stop(proc)
    tb = topics.get("pretreatment-workup", {})
    assert (tb.get("issued"), tb.get("overridden")) == (1, 1), report.stderr
    assert report.stderr == f"database: sqlite:///{database}\n"
    served = [
        json.loads(line)["message"] for line in log.read_text().splitlines() if line.startswith("{")
    ]
    assert f"database: sqlite:///{database}" in served
    assert database.is_file()
    assert list(serve_folder.iterdir()) == [] and list(report_folder.iterdir()) == []
