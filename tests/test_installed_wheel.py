"""What ships is what is tested: the wheel, installed outside the checkout, answers as the source.

The rest of the suite runs the editable install, which reads package data from the checkout, so a
data file left out of the wheel goes unseen until someone installs it (issue 10: every warning or
critical card answered 500). Here the wheel is built from the inputs the Dockerfile's build stage
copies, with the same `pip wheel`, installed (not editable) in a fresh venv, and its console script
serves from a folder outside the checkout. Every request fixture then goes over HTTP to it and
through the source tree's in-process app: status, content type and body must be the same bytes.
tests/test_container.py checks statically that the image installs this wheel and runs this command.

Skips only when the build backend (pyproject's build-system.requires) cannot be installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from served import free_port, stop, wait_until_serving

from cds_service.app import create_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = ROOT / "fhir_fixtures" / "requests"
FIXTURES = sorted(path.stem for path in REQUESTS.glob("*.json"))
BUILD_INPUTS = ("pyproject.toml", "README.md", "cds_service")
"""What the Dockerfile's build stage copies (tests/test_container.py holds it to that)."""
WHEEL_BUILD = ("wheel", "--no-deps", "--wheel-dir")
"""The pip command that builds the wheel, here and in the Dockerfile."""
NOT_SHIPPED = ("__pycache__", ".pyc")
CHECKED_FIXTURE = "live_vaccine_three_weeks_before_start"  # a critical card: exit status 2


@dataclass(frozen=True)
class Installed:
    """The built wheel and the fresh venv it is installed in; `outside` is a folder outside the
    checkout used as the working folder, with its own state folder."""

    wheel: Path
    venv: Path
    outside: Path

    def script(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self) -> dict[str, str]:
        """No setting, path or metrics folder leaks in from the test run's environment."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CDS_", "PROMETHEUS_", "PYTHON", "VIRTUAL_ENV"))
        }
        env["CDS_STATE_DIR"] = str(self.outside / "state")
        return env

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command),
            cwd=self.outside,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def fresh_venv(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel once per session and install it, with its dependencies, in a fresh venv."""
    work = tmp_path_factory.mktemp("installed-wheel")
    source = work / "source"  # a copy: building in the checkout would write build/ into it
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name,
                source / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    build_python = fresh_venv(work / "build-venv")
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    got_backend = pip(build_python, "install", *backend)
    if got_backend.returncode != 0:
        pytest.skip(
            f"the build backend {backend} cannot be installed: {got_backend.stderr.strip()[-500:]}"
        )
    dist = work / "dist"
    built = pip(build_python, *WHEEL_BUILD, str(dist), "--no-build-isolation", str(source))
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("cds_service-*.whl")
    python = fresh_venv(work / "venv")
    install = pip(python, "install", str(wheel))
    assert install.returncode == 0, install.stderr[-3000:]
    outside = work / "elsewhere"
    outside.mkdir()
    return Installed(wheel=wheel, venv=work / "venv", outside=outside)


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[str]:
    """The installed `cds-service serve --no-auth`, started from outside the checkout; its URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = installed.outside / "serve.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                installed.script("cds-service"),
                "serve",
                "--no-auth",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=installed.outside,
            env=installed.env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_until_serving(
                proc, base + "/readyz", timeout=60, why_exited=lambda: log.read_text()[-3000:]
            )
            yield base
        finally:
            stop(proc)


@pytest.fixture(scope="module")
def source_client(tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    """The source tree's app, in process: what the installed service must answer."""
    folder = tmp_path_factory.mktemp("source-app")
    return create_app(testing=True, database_url=f"sqlite:///{folder}/t.sqlite3").test_client()


@pytest.fixture(scope="module")
def service_paths(source_client: FlaskClient) -> dict[str, str]:
    """hook -> service path, from the source tree's discovery answer."""
    services = source_client.get("/cds-services").get_json()["services"]
    return {service["hook"]: f"/cds-services/{service['id']}" for service in services}


def test_the_wheel_holds_every_file_of_the_package(installed: Installed) -> None:
    """Every file under cds_service/ in the checkout (code, value sets, policy, code systems,
    notes) is in the wheel: a new data file cannot be left out unnoticed."""
    source = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "cds_service").rglob("*")
        if path.is_file() and not any(part in path.as_posix() for part in NOT_SHIPPED)
    }
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = set(wheel.namelist())
    assert sorted(source - shipped) == []
    assert {
        "cds_service/terminology/CodeSystem-non-adherence-reason-codes.json",
        "cds_service/domain/policy.toml",
    } <= shipped
    assert not [name for name in shipped if any(part in name for part in NOT_SHIPPED)]


def test_the_installed_package_is_imported_from_the_venv_not_the_checkout(
    installed: Installed,
) -> None:
    """The venv is not an editable install: the code it runs lies inside the venv."""
    result = installed.run(
        installed.script("python"), "-c", "import cds_service; print(cds_service.__file__)"
    )
    assert result.returncode == 0, result.stderr
    location = Path(result.stdout.strip())
    assert location.is_relative_to(installed.venv)
    assert not location.is_relative_to(ROOT)


def test_the_installed_service_discovers_the_same_services(
    served: str, source_client: FlaskClient
) -> None:
    """Discovery, with its prefetch templates, is the source tree's."""
    got = requests.get(served + "/cds-services", timeout=10)
    assert (got.status_code, got.content) == (200, source_client.get("/cds-services").get_data())


@pytest.mark.parametrize("name", FIXTURES)
def test_the_installed_service_answers_every_fixture_as_the_source_tree(
    name: str, served: str, service_paths: dict[str, str], source_client: FlaskClient
) -> None:
    """Over HTTP to the installed server and in process to the source tree: the same status,
    content type and body bytes (card uuids derive from the request, so they match too)."""
    body = (REQUESTS / f"{name}.json").read_bytes()
    path = service_paths[json.loads(body)["hook"]]
    headers = {"Content-Type": "application/json"}
    expected = source_client.post(path, data=body, headers=headers)
    got = requests.post(served + path, data=body, headers=headers, timeout=60)
    assert (got.status_code, got.headers["Content-Type"]) == (
        expected.status_code,
        expected.headers["Content-Type"],
    )
    assert got.content == expected.get_data()


def test_the_fixtures_cover_every_card_indicator(
    service_paths: dict[str, str], source_client: FlaskClient
) -> None:
    """The comparison above is worth something only if the fixtures build info, warning and
    critical cards (the missing code system broke warning and critical cards only)."""
    indicators = set()
    for name in FIXTURES:
        doc = json.loads((REQUESTS / f"{name}.json").read_bytes())
        response = source_client.post(service_paths[doc["hook"]], json=doc)
        if response.status_code == 200:
            indicators |= {card["indicator"] for card in response.get_json()["cards"]}
    assert indicators == {"info", "warning", "critical"}


def test_the_installed_check_command_prints_what_the_source_tree_prints(
    installed: Installed,
) -> None:
    """`cds-service check` through the installed console script, from outside the checkout:
    the same checklist, the same exit status (2: a critical finding) as the source tree."""
    request = str(REQUESTS / f"{CHECKED_FIXTURE}.json")
    got = installed.run(installed.script("cds-service"), "check", request)
    expected = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "check", request],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (got.returncode, got.stderr) == (2, "")
    assert (expected.returncode, got.stdout) == (2, expected.stdout)
