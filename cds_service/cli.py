"""The `cds-service` command: serve the API, or check a saved hook request from the shell."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from .errors import ServiceError


def prepare_metrics_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR for this server run, set before prometheus_client is imported.

    A given folder is emptied of the previous run's sample files (the client library requires
    it); with none given, a fresh temporary folder is used."""
    import tempfile

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        folder = tempfile.mkdtemp(prefix="cds-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def _serve(args: argparse.Namespace) -> int:
    # gevent workers: patch the standard library before anything imports ssl, requests or
    # threading, gunicorn included (cds_service/server.py says why).
    from gevent import monkey

    monkey.patch_all()
    from .server import ServerOptions, run

    if "prometheus_client" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        print(
            "WARNING: metrics imported before PROMETHEUS_MULTIPROC_DIR was set: /metrics will "
            "show one worker's samples only.",
            file=sys.stderr,
        )
    prepare_metrics_dir()
    import logging

    from .config import Settings
    from .cors import CorsPolicy
    from .observability import configure_logging, worker_exited

    configure_logging()
    log = logging.getLogger("cds_service.serve")
    if args.keepalive <= 0:
        # It also bounds the time to send a request's headers: 0 would leave that unbounded.
        log.error("the keep-alive timeout (--keepalive, CDS_KEEPALIVE_SECONDS) must be positive")
        return 2
    if args.no_auth:
        log.warning("serving WITHOUT EHR authentication (--no-auth): for local use only")
        settings = Settings.from_env(auth_disabled=True)
    else:
        from .auth import AuthConfigError, load_trusted_issuers

        settings = Settings.from_env()  # authentication on: the environment cannot turn it off
        try:
            issuers = load_trusted_issuers(settings)
        except AuthConfigError as exc:
            log.error("trusted issuer configuration: %s", exc)
            return 2
        if not issuers:
            log.error(
                "EHR authentication is not configured. Configure trusted issuers, or pass "
                "--no-auth to run without authentication (local use only)."
            )
            return 2
        log.info(
            "EHR authentication: %d trusted issuer(s): %s",
            len(issuers),
            ", ".join(i.iss for i in issuers),
        )
    from .storage import database_name

    log.info("database: %s", database_name(settings.database_url))

    def load_app() -> Any:
        """Runs in each worker at boot (after gevent's patching), before it accepts."""
        from .app import create_app

        app = create_app(settings)
        # The first retention prune of this worker starts now, in the background, rather than
        # on the first patient's call (which it would otherwise make a few ms slower).
        app.extensions["cds_pruner"].poke()
        return app

    run(
        load_app,
        ServerOptions(
            host=args.host,
            port=args.port,
            workers=args.workers,
            keepalive_seconds=args.keepalive,
            worker_connections=args.worker_connections,
            cors=CorsPolicy(settings.cors_allowed_origins),
            on_worker_exit=worker_exited,
        ),
    )
    return 0


EXIT_PIPE_CLOSED = 141
"""128 + SIGPIPE: what a shell reports for a command whose reader went away (`check ... | head`)."""

CHECK_EXIT_STATUS = """exit status:
  0    no critical finding (warnings may remain), or no alemtuzumab order
  1    input error: the request is unreadable, not JSON or not a hook request
  2    at least one critical finding: do not start
  141  standard output closed early (piped into head): nothing more is printed"""


def _write_stdout(text: str) -> bool:
    """Write and flush; False when the reader has gone (`| head`). Standard output then points
    at /dev/null so the interpreter's last flush cannot fail again (Python docs, "Note on
    SIGPIPE"): the command ends quietly, without a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True


def _check(args: argparse.Namespace) -> int:
    import shutil

    from .cards import checklist_of
    from .check_report import critical, render_check
    from .engine import answer
    from .hook_request import parse_json, read_hook_request
    from .services import SERVICES

    source = "standard input" if args.request == "-" else args.request
    try:
        body = sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {source}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        doc = parse_json(body)
        hook = doc.get("hook") if isinstance(doc, dict) else None
        service = next((s for s in SERVICES if s.hook == hook), None)
        if service is None:
            print(f"error: no service answers hook {hook!r}", file=sys.stderr)
            return 1
        request = read_hook_request(doc, service.hook)
        today = date.fromisoformat(args.today) if args.today else date.today()
        result = answer(request, service, today)
    except ServiceError as exc:
        print(f"error ({exc.status}): {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        # The request was read above: this is one of the service's own files (package data
        # missing from the installation, say), not the user's.
        print(
            f"error: internal failure: the service cannot read its own file "
            f"{exc.filename or '(unnamed)'}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    status = 2 if critical(result) else 0
    if args.json:
        text = (
            orjson.dumps(
                {
                    "service": service.id,
                    "plannedStart": result.order.t0.isoformat() if result.order else None,
                    "checklist": checklist_of(result.body["cards"]),
                    "cards": result.body["cards"],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
            + "\n"
        )
    else:
        text = render_check(request, result, shutil.get_terminal_size((80, 24)).columns)
    return status if _write_stdout(text) else EXIT_PIPE_CLOSED


MONITOR_EXIT_STATUS = """exit status:
  0    the worklist was printed (skipped lines, if any, are listed with it)
  2    the export folder is missing, unreadable or holds no NDJSON file
  141  standard output closed early (piped into head): nothing more is printed"""


def _monitor(args: argparse.Namespace) -> int:
    """The clinic's alemtuzumab monitoring worklist from a FHIR Bulk Data export."""
    import shutil

    from .bulk_export import ExportError, open_export
    from .worklist import as_csv, as_json, build_worklist, render_text

    try:
        today = date.fromisoformat(args.today) if args.today else date.today()
    except ValueError:
        print(f"error: --today {args.today!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    try:
        export = open_export(Path(args.export_dir))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    worklist = build_worklist(export, today)
    if args.json:
        text = orjson.dumps(as_json(worklist), option=orjson.OPT_INDENT_2).decode() + "\n"
    elif args.csv:
        text = as_csv(worklist)
        if worklist.lines_skipped:  # standard output stays the CSV alone
            print(
                f"{worklist.lines_skipped} line(s) skipped; --json or the text output names them",
                file=sys.stderr,
            )
        for patient_id in worklist.not_evaluated:
            print(f"NOT EVALUATED (review by hand): patient {patient_id}", file=sys.stderr)
    else:
        text = render_text(worklist, shutil.get_terminal_size((80, 24)).columns)
    return 0 if _write_stdout(text) else EXIT_PIPE_CLOSED


def _feedback_report(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .config import Settings
    from .feedback import check_report, feedback_report, format_report
    from .storage import Database, database_name

    url = args.database_url or Settings.from_env().database_url
    print(f"database: {database_name(url)}", file=sys.stderr)  # stdout stays the report alone
    database = Database(url)
    try:
        reports = feedback_report(database)
        checks = check_report(database)
    except (SQLAlchemyError, OSError) as exc:
        print(f"error: cannot read the database: {type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        sys.stdout.write(
            orjson.dumps(
                {
                    "topics": [r.as_json() for r in reports],
                    "checks": [c.as_json() for c in checks],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
            + "\n"
        )
    else:
        sys.stdout.write(format_report(reports, checks))
    return 0


def _prune(args: argparse.Namespace) -> int:
    """Delete issued-card rows and feedback past their retention, and expired JWT ids."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    from .config import Settings
    from .retention import prune
    from .storage import Database

    settings = Settings.from_env()
    database = Database(
        args.database_url or settings.database_url, settings.database_lock_timeout_seconds
    )
    try:
        pruned = prune(database, settings, datetime.now(UTC))
    except (SQLAlchemyError, OSError) as exc:
        print(f"error: cannot prune the database: {type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        sys.stdout.write(
            orjson.dumps({"deleted": pruned.as_json()}, option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        keep = {
            "issued cards": settings.audit_retention_days,
            "feedback items": settings.feedback_retention_days,
        }
        counts = {"issued cards": pruned.issued_cards, "feedback items": pruned.feedback}
        for what, days in keep.items():
            after = f"older than {days} days" if days > 0 else "(kept forever: retention 0)"
            print(f"deleted {counts[what]} {what} {after}")
        print(f"deleted {pruned.seen_jti} expired JWT ids")
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Report every problem of a hook request file; exit 1 when there are errors."""
    from .conformance import Problem, counts, validate_request

    try:
        problems = validate_request(orjson.loads(Path(args.request).read_bytes()))
    except OSError as exc:
        problems = [Problem("error", "$", f"cannot read {args.request}: {exc.strerror}")]
    except orjson.JSONDecodeError as exc:
        problems = [Problem("error", "$", f"not valid JSON ({exc})")]
    errors, warnings = counts(problems)
    if args.json:
        sys.stdout.write(
            orjson.dumps(
                {
                    "errors": errors,
                    "warnings": warnings,
                    "problems": [p.as_dict() for p in problems],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
            + "\n"
        )
    else:
        for problem in problems:
            print(problem.line())
        print(
            f"{args.request}: {errors} error{'s' * (errors != 1)}, "
            f"{warnings} warning{'s' * (warnings != 1)}"
        )
    return 1 if errors else 0


def _dev_issuer(args: argparse.Namespace) -> int:
    """Write (or reuse) a local issuer kit; with --mint, print one token for that URL."""
    from .dev_issuer import DEFAULT_ISS, PRIVATE_KEY, DevIssuerError, create, load

    folder = Path(args.folder)
    try:
        exists = (folder / PRIVATE_KEY).exists()
        if exists and not args.force:
            kit = load(folder)
            if args.iss is not None and args.iss != kit.iss:
                raise DevIssuerError(
                    f"{folder} signs as {kit.iss!r}, not {args.iss!r}; --force writes a new issuer"
                )
        else:
            kit = create(folder, args.iss or DEFAULT_ISS, replace=args.force)
        token = kit.mint(args.mint, args.lifetime) if args.mint else None
    except DevIssuerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # With --mint, standard output is the token alone (TOKEN=$(cds-service dev-issuer ...)).
    notes = sys.stderr if token else sys.stdout
    kept = exists and not args.force
    if token is None or not kept:
        print(
            f"{'kept' if kept else 'wrote'} {folder}/: private-key.pem (secret), "
            f"public-key.pem, jwks.json, issuers.json (iss {kit.iss}, kid {kit.kid})",
            file=notes,
        )
    if token is None:
        print(
            f"serve with: CDS_TRUSTED_ISSUERS_FILE={kit.issuers_file.resolve()} "
            "cds-service serve\nmint a token: cds-service dev-issuer "
            f"{folder} --mint http://127.0.0.1:8080/cds-services",
            file=notes,
        )
        print(
            "for local testing only: anyone who can read private-key.pem can sign calls "
            "that a service trusting this issuer accepts",
            file=notes,
        )
    else:
        print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the CDS Hooks API with gunicorn")
    # Defaults from the environment, so a container is configured by environment only.
    serve.add_argument(
        "--host",
        default=os.environ.get("CDS_HOST", "127.0.0.1"),
        help="address to bind (env CDS_HOST)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CDS_PORT", "8080")),
        help="port (env CDS_PORT)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("CDS_WORKERS", "2")),
        help="gunicorn worker processes (env CDS_WORKERS)",
    )
    serve.add_argument(
        "--keepalive",
        type=int,
        default=int(os.environ.get("CDS_KEEPALIVE_SECONDS", "5")),
        help="seconds an idle connection is kept open, and the most a client may "
        "take to send a request's headers (env CDS_KEEPALIVE_SECONDS)",
    )
    serve.add_argument(
        "--worker-connections",
        type=int,
        default=int(os.environ.get("CDS_WORKER_CONNECTIONS", "1000")),
        help="open connections per worker (env CDS_WORKER_CONNECTIONS)",
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="run without EHR (JWT) authentication: for local use and tests only",
    )
    serve.set_defaults(func=_serve)
    check = sub.add_parser(
        "check",
        help="evaluate a saved hook request and print the checklist",
        description="Evaluate a saved CDS Hooks request as the service would and print the\n"
        "patient and order, the problems (critical, warning, unknown), the met\n"
        "checks and the reminders of the summary card, wrapped to the terminal\n"
        "(80 columns when not a terminal; the COLUMNS variable overrides).",
        epilog=CHECK_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "request", help="path to a CDS Hooks request JSON file, or - to read standard input"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--today", help="the date to assume when the order has no start (YYYY-MM-DD)"
    )
    check.set_defaults(func=_check)
    monitor = sub.add_parser(
        "monitor",
        help="the clinic's alemtuzumab monitoring worklist from a FHIR Bulk Data export",
        description="Read a FHIR Bulk Data export (NDJSON files named by resource type, as\n"
        "$export writes them: Patient.000.ndjson, Observation.001.ndjson...), find\n"
        "every patient with an alemtuzumab (Lemtrada) infusion, run the\n"
        "lemtrada-monitoring checks and print one row per patient, most urgent first\n"
        "(critical, then the longest overdue). Patients recorded as deceased are\n"
        "listed apart. The export is streamed: memory grows with the treated\n"
        "patients, not with the export. Text is wrapped to the terminal (80\n"
        "columns when not a terminal; the COLUMNS variable overrides).",
        epilog=MONITOR_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    monitor.add_argument("export_dir", metavar="EXPORT_DIR", help="the export's folder")
    monitor.add_argument("--today", help="the date to evaluate on (YYYY-MM-DD; default today)")
    output = monitor.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable JSON")
    output.add_argument("--csv", action="store_true", help="one CSV line per patient")
    monitor.set_defaults(func=_monitor)
    report = sub.add_parser(
        "feedback-report",
        help="per card topic: cards issued, accepted, overridden, override reasons",
    )
    report.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: CDS_DATABASE_URL or the configured default)",
    )
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.set_defaults(func=_feedback_report)
    prune = sub.add_parser(
        "prune",
        help="delete issued-card rows and feedback past their "
        "retention (CDS_AUDIT_RETENTION_DAYS, CDS_FEEDBACK_RETENTION_DAYS) and "
        "expired JWT ids",
    )
    prune.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: CDS_DATABASE_URL or the configured default)",
    )
    prune.add_argument("--json", action="store_true", help="machine-readable output")
    prune.set_defaults(func=_prune)
    validate = sub.add_parser(
        "validate",
        help="report every problem of a hook request an EHR "
        "would send, with its JSON path (exit 1 on errors)",
    )
    validate.add_argument("request", help="path to a CDS Hooks request JSON file")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.set_defaults(func=_validate)
    dev = sub.add_parser(
        "dev-issuer",
        help="for local testing: write an ES384 key pair, its JWKS and an issuers "
        "file, and mint tokens (--mint URL)",
        description="Write a local EHR issuer into FOLDER (kept if it exists): private-key.pem, "
        "public-key.pem, jwks.json and issuers.json, the file CDS_TRUSTED_ISSUERS_FILE "
        "takes. With --mint URL, print one token for a call to URL (aud = URL), "
        "signed as an EHR signs it. For local testing only.",
    )
    dev.add_argument("folder", help="where the kit is written (created owner-only)")
    dev.add_argument(
        "--iss",
        help="issuer name of a new kit (default https://dev-issuer.invalid, "
        "a name no real issuer can have)",
    )
    dev.add_argument(
        "--mint",
        metavar="URL",
        help="print a token for one call to URL: the full "
        "URL the EHR calls (CDS_PUBLIC_BASE_URL + path)",
    )
    dev.add_argument(
        "--lifetime",
        type=int,
        default=300,
        help="seconds the minted token is valid (at most 3600; default 300)",
    )
    dev.add_argument(
        "--force",
        action="store_true",
        help="replace an existing kit with a new key (old tokens stop verifying)",
    )
    dev.set_defaults(func=_dev_issuer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
