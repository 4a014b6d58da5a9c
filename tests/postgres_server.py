"""A throwaway PostgreSQL server on 127.0.0.1 for tests, or an existing one named by an env var.

    server = PostgresServer.start()        # initdb into a temp dir, postgres on a free port
    url = server.create_database()         # a fresh, empty database: postgresql+psycopg://...
    server.stop()                          # SIGINT (fast shutdown) by process id, wait, delete dir

`CDS_TEST_POSTGRES_URL=postgresql+psycopg://user@host:port/db` uses that server instead (its user
must be allowed to CREATE DATABASE; every test database is dropped afterwards). Without it, the
server binaries are looked up with `pg_config --bindir` and under /usr/lib/postgresql/*/bin; when
none is found `PostgresUnavailable` says why (the tests skip with that reason). PostgreSQL refuses
to run as root, so as root the data directory is given to the `postgres` OS user and initdb and
postgres run as that user (Popen's user/group, so the process id held is the server's own).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from served import free_port
from sqlalchemy.engine import URL, make_url

ENV_URL = "CDS_TEST_POSTGRES_URL"
SUPERUSER = "cds"
STARTUP_SECONDS = 30.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started or reached here; the message is the skip reason."""


def find_bindir() -> Path | None:
    """The folder holding initdb and postgres, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    # Debian puts the server binaries outside PATH; the newest version first.
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: _version_key(p.parent.name),
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _run_as() -> dict[str, Any]:
    """Popen arguments running the child as the `postgres` OS user when we are root (PostgreSQL
    refuses root); none otherwise. Set on the child itself (not through runuser), so the process
    id we hold is the server's and a signal to it reaches the server."""
    if os.geteuid() != 0:
        return {}
    try:
        import pwd

        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no `postgres` OS user to run "
            "PostgreSQL as (it refuses to run as root)"
        ) from None
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "HOME": entry.pw_dir, "USER": "postgres", "LOGNAME": "postgres"},
    }


@dataclass
class PostgresServer:
    """A server the tests may create databases on; `process` is None for an external server."""

    admin_url: URL
    process: subprocess.Popen[bytes] | None = None
    directory: Path | None = None
    databases: list[str] = field(default_factory=list)
    bindir: Path | None = None
    run_as: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls) -> PostgresServer:
        """The server named by CDS_TEST_POSTGRES_URL, else a new one; PostgresUnavailable if
        neither."""
        external = os.environ.get(ENV_URL)
        if external:
            server = cls(admin_url=_with_driver(make_url(external)))
            try:
                server._wait_until_ready(deadline=time.monotonic() + 10)
            except PostgresUnavailable as exc:
                raise PostgresUnavailable(f"{ENV_URL} is set but: {exc}") from None
            return server
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries (initdb, postgres) not found; "
                "install Debian's `postgresql` or set " + ENV_URL
            )
        run_as = _run_as()
        directory = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        if run_as:
            os.chmod(directory, 0o700)
            shutil.chown(directory, "postgres", "postgres")
        data = directory / "data"
        initdb = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=directory,
            **run_as,
        )
        if initdb.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise PostgresUnavailable(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        admin_url = URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            host="127.0.0.1",
            port=free_port(),
            database="postgres",
        )
        server = cls(admin_url=admin_url, directory=directory, bindir=bindir, run_as=run_as)
        server.resume()
        return server

    def resume(self) -> None:
        """Start (or restart after `pause`) our server on its port and wait until it accepts."""
        assert self.directory is not None and self.bindir is not None, "not our server"
        with open(self.directory / "server.log", "ab") as log_file:  # the child keeps a copy
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.directory / "data"),
                    "-p",
                    str(self.admin_url.port),
                    "-k",
                    str(self.directory),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=50",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                cwd=self.directory,
                **self.run_as,
            )
        try:
            self._wait_until_ready(deadline=time.monotonic() + STARTUP_SECONDS)
        except PostgresUnavailable:
            log = self.log_tail()
            self.stop()
            raise PostgresUnavailable(f"PostgreSQL did not start: {log}") from None

    def pause(self) -> None:
        """Shut our server down (fast shutdown, by its process id), keeping its data for resume."""
        assert self.process is not None, "not our server"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def _wait_until_ready(self, deadline: float) -> None:
        import psycopg

        last = "no attempt"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PostgresUnavailable(f"exited with status {self.process.returncode}")
            try:
                with psycopg.connect(self._dsn(self.admin_url), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                time.sleep(0.05)
        raise PostgresUnavailable(f"not accepting connections: {last}")

    @staticmethod
    def _dsn(url: URL) -> str:
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    @property
    def running(self) -> bool:
        return self.process is None or self.process.poll() is None

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL (psycopg driver)."""
        import psycopg

        name = f"cds_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._dsn(self.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, never user input
        self.databases.append(name)
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop a database made by create_database, closing whatever still connects to it."""
        import psycopg

        name = make_url(url).database
        if name not in self.databases or not self.running:
            return
        with psycopg.connect(self._dsn(self.admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.remove(name)

    def log_tail(self, lines: int = 20) -> str:
        if self.directory is None:
            return ""
        try:
            text = (self.directory / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop a server we started (by its process id: SIGINT is PostgreSQL's fast shutdown),
        then delete its directory. An external server is left running; its test databases are
        dropped."""
        if self.process is None:
            for name in list(self.databases):
                self.drop_database(self.admin_url.set(database=name).render_as_string(False))
            return
        self.pause()
        self.databases.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _with_driver(url: URL) -> URL:
    """postgresql:// -> postgresql+psycopg:// (the driver this project installs)."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url
