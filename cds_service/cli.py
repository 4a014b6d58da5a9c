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
        print("WARNING: metrics imported before PROMETHEUS_MULTIPROC_DIR was set: /metrics will "
              "show one worker's samples only.", file=sys.stderr)
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
            log.error("EHR authentication is not configured. Configure trusted issuers, or pass "
                      "--no-auth to run without authentication (local use only).")
            return 2
        log.info("EHR authentication: %d trusted issuer(s): %s", len(issuers),
                 ", ".join(i.iss for i in issuers))

    def load_app() -> Any:
        """Runs in each worker at boot (after gevent's patching), before it accepts."""
        from .app import create_app

        return create_app(settings)

    run(load_app, ServerOptions(
        host=args.host, port=args.port, workers=args.workers,
        keepalive_seconds=args.keepalive, worker_connections=args.worker_connections,
        cors=CorsPolicy(settings.cors_allowed_origins), on_worker_exit=worker_exited))
    return 0


def _check(args: argparse.Namespace) -> int:
    from .engine import answer
    from .hook_request import parse_json, read_hook_request
    from .services import SERVICES

    try:
        doc = parse_json(Path(args.request).read_bytes())
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
        print(f"error: cannot read {args.request}: {exc.strerror}", file=sys.stderr)
        return 1
    cards = result.body["cards"]
    critical = any(card["indicator"] == "critical" for card in cards)
    if args.json:
        sys.stdout.write(orjson.dumps({
            "service": service.id,
            "plannedStart": result.order.t0.isoformat() if result.order else None,
            "checks": [{"topic": f.topic, "status": f.status.value,
                        "indicator": f.severity.indicator if f.shown else None,
                        "summary": f.headline, "evidence": list(f.evidence),
                        "unreadable": [str(u) for u in f.unreadable]} for f in result.findings],
            "cards": cards,
        }, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 2 if critical else 0
    if result.order is None:
        print("No alemtuzumab (Lemtrada) order under review: no cards.")
        return 0
    print(f"Order {result.order.order.reference}: planned start {result.order.t0} "
          f"({result.order.t0_source})")
    rows = [(f.topic, f.status.value, f.severity.indicator if f.shown else "-", f.headline)
            for f in result.findings]
    widths = [max(len(r[i]) for r in rows + [("check", "status", "card", "")]) for i in range(3)]
    print(f"{'check':<{widths[0]}}  {'status':<{widths[1]}}  {'card':<{widths[2]}}  finding")
    for topic, status, indicator, headline in rows:
        print(f"{topic:<{widths[0]}}  {status:<{widths[1]}}  {indicator:<{widths[2]}}  {headline}")
        for finding in result.findings:
            if finding.topic == topic and finding.shown:
                for line in finding.evidence:
                    print(f"{'':<{widths[0]}}    - {line}")
                for unreadable in finding.unreadable:
                    print(f"{'':<{widths[0]}}    - unreadable: {unreadable}")
    print("Result: " + ("CRITICAL findings: do not start" if critical else
                         "no critical findings" + (" (warnings to review)" if any(
                             f.shown for f in result.findings) else "")))
    return 2 if critical else 0


def _feedback_report(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .config import Settings
    from .feedback import feedback_report, format_report
    from .storage import Database

    url = args.database_url or Settings.from_env().database_url
    database = Database(url)
    try:
        reports = feedback_report(database)
    except (SQLAlchemyError, OSError) as exc:
        print(f"error: cannot read the database: {type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        sys.stdout.write(orjson.dumps({"topics": [r.as_json() for r in reports]},
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_report(reports))
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
        sys.stdout.write(orjson.dumps({"errors": errors, "warnings": warnings, "problems": [
            p.as_dict() for p in problems]}, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for problem in problems:
            print(problem.line())
        print(f"{args.request}: {errors} error{'s' * (errors != 1)}, "
              f"{warnings} warning{'s' * (warnings != 1)}")
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the CDS Hooks API with gunicorn")
    # Defaults from the environment, so a container is configured by environment only.
    serve.add_argument("--host", default=os.environ.get("CDS_HOST", "127.0.0.1"),
                       help="address to bind (env CDS_HOST)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("CDS_PORT", "8080")),
                       help="port (env CDS_PORT)")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("CDS_WORKERS", "2")),
                       help="gunicorn worker processes (env CDS_WORKERS)")
    serve.add_argument("--keepalive", type=int,
                       default=int(os.environ.get("CDS_KEEPALIVE_SECONDS", "5")),
                       help="seconds an idle connection is kept open, and the most a client may "
                            "take to send a request's headers (env CDS_KEEPALIVE_SECONDS)")
    serve.add_argument("--worker-connections", type=int,
                       default=int(os.environ.get("CDS_WORKER_CONNECTIONS", "1000")),
                       help="open connections per worker (env CDS_WORKER_CONNECTIONS)")
    serve.add_argument("--no-auth", action="store_true",
                       help="run without EHR (JWT) authentication: for local use and tests only")
    serve.set_defaults(func=_serve)
    check = sub.add_parser("check", help="evaluate a saved hook request and print the checklist")
    check.add_argument("request", help="path to a CDS Hooks request JSON file")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--today",
                       help="the date to assume when the order has no start (YYYY-MM-DD)")
    check.set_defaults(func=_check)
    report = sub.add_parser("feedback-report",
                            help="per card topic: cards issued, accepted, overridden, "
                                 "override reasons")
    report.add_argument("--database-url", help="SQLAlchemy URL (default: CDS_DATABASE_URL or the "
                        "configured default)")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.set_defaults(func=_feedback_report)
    validate = sub.add_parser("validate", help="report every problem of a hook request an EHR "
                              "would send, with its JSON path (exit 1 on errors)")
    validate.add_argument("request", help="path to a CDS Hooks request JSON file")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.set_defaults(func=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
