"""The container recipe: what the Dockerfile promises, run for real without a Docker daemon.

No image is built here (no daemon, no registry); instead the runtime stage's own ENV, CMD and
HEALTHCHECK are read from the Dockerfile and executed against this checkout's installed package:
the server must start from environment variables alone, and the health check must pass while it
serves and fail once it is gone. The build is checked statically: the image installs the wheel
tests/test_installed_wheel.py builds, installs and serves, and keeps no copy of it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from jwt_keys import ec_key, jwks
from served import free_port, stop, wait_until_serving
from test_installed_wheel import BUILD_INPUTS, WHEEL_BUILD

# Slow: builds the wheel and runs the image's command for real;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) of each stage, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    out: list[list[tuple[str, str]]] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out.append([])
        out[-1].append((word.upper(), rest.strip()))
    return out


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the runtime (last) stage."""
    return stages()[-1]


def env_of_image() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(word: str) -> list[str]:
    """The JSON (exec) form of CMD, or of HEALTHCHECK's CMD."""
    rest = next(rest for w, rest in instructions() if w == word)
    command: list[str] = json.loads(rest[rest.index("[") :])
    return command


def test_the_runtime_stage_runs_unprivileged_with_a_health_check_and_no_flags() -> None:
    """Non-root USER, a HEALTHCHECK, gunicorn via `cds-service serve` configured by ENV only."""
    words = dict(instructions())
    assert words["USER"] not in ("", "root", "0")
    assert "HEALTHCHECK" in words
    assert exec_form("CMD") == ["cds-service", "serve"]
    assert {
        "CDS_HOST",
        "CDS_PORT",
        "CDS_WORKERS",
        "CDS_STATE_DIR",
        "PROMETHEUS_MULTIPROC_DIR",
    } <= set(env_of_image())
    # The database lives in the state folder unless the operator names another one.
    assert "CDS_DATABASE_URL" not in env_of_image()
    build = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "[test" not in build and "[bench" not in build  # no test or bench extras


def test_the_build_stage_builds_the_wheel_the_installed_wheel_test_builds() -> None:
    """Same inputs, same `pip wheel` (tests/test_installed_wheel.py builds, installs and serves
    that wheel outside the checkout), and the runtime command is the one that test runs."""
    build = stages()[0]
    copied = [shlex.split(rest)[:-1] for word, rest in build if word == "COPY"]
    assert sorted(name for sources in copied for name in sources) == sorted(BUILD_INPUTS)
    (wheel_command,) = [shlex.split(rest) for word, rest in build if word == "RUN"]
    assert wheel_command[:2] == ["pip", "wheel"] and wheel_command[-1] == "."
    assert set(WHEEL_BUILD) <= set(wheel_command)
    assert wheel_command[wheel_command.index("--wheel-dir") + 1] == "/wheels"
    assert exec_form("CMD") == ["cds-service", "serve"]


def test_the_runtime_stage_installs_the_wheel_through_a_bind_mount_and_keeps_no_copy() -> None:
    """The wheel is read from the build stage during one RUN: no layer of the image holds it."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert text.startswith("# syntax=docker/dockerfile:1")  # RUN --mount needs BuildKit syntax
    runtime = instructions()
    assert not [rest for word, rest in runtime if word in ("COPY", "ADD")]
    installs = [
        shlex.split(rest) for word, rest in runtime if word == "RUN" and "pip install" in rest
    ]
    assert installs == [
        [
            "--mount=type=bind,from=build,source=/wheels,target=/wheels",
            "pip",
            "install",
            "--no-cache-dir",
            "/wheels/*.whl",
        ]
    ]


def test_the_build_context_leaves_out_caches_venvs_and_everything_but_the_package() -> None:
    """.dockerignore keeps tool caches, virtual environments, tests and state out of the context
    (and so out of any layer and of the build cache)."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
        ".venv",
        ".git",
        "**/__pycache__",
        "build",
        "dist",
        "*.egg-info",
        "tests",
        "fhir_fixtures",
        "bench",
        "*.sqlite3",
    } <= ignored


def image_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The Dockerfile's ENV, with the paths and port moved into this test's sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))}
    env.update(env_of_image())
    env.update(
        CDS_HOST="127.0.0.1",
        CDS_PORT=str(free_port()),
        CDS_STATE_DIR=str(tmp_path / "state"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        **extra,
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def health_check(env: dict[str, str]) -> int:
    command = exec_form("HEALTHCHECK")
    if command[0] == "python":
        command[0] = sys.executable
    return subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode


def test_the_image_command_serves_from_environment_and_the_health_check_follows_it(
    tmp_path: Path,
) -> None:
    """CMD starts from ENV alone; HEALTHCHECK passes while it serves and fails after it stops."""
    issuers = json.dumps([{"iss": "https://ehr.example.org", "jwks": jwks(ec_key("k"))}])
    env = image_env(tmp_path, CDS_TRUSTED_ISSUERS_JSON=issuers)
    base = f"http://127.0.0.1:{env['CDS_PORT']}"
    proc = subprocess.Popen(
        exec_form("CMD"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_until_serving(proc, base + "/readyz")
        assert health_check(env) == 0
        assert requests.get(base + "/cds-services", timeout=5).status_code == 401
    finally:
        stop(proc)
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert health_check(env) != 0
    # The server's own lines are JSON (gunicorn's included).
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert records and all(record["level"] for record in records)
    # No gunicorn control socket: its default path ($HOME/.gunicorn) would be shared by every
    # server of the same user on a host.
    assert not [r for r in records if "Control socket" in r["message"]]


def test_the_image_refuses_to_start_without_trusted_issuers(tmp_path: Path) -> None:
    """Secure by default in the container too: no issuers, no server (exit 2, reason logged)."""
    env = image_env(tmp_path)
    result = subprocess.run(exec_form("CMD"), env=env, capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert b"EHR authentication is not configured" in result.stderr
