"""The Flask application factory."""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, Response, request

from .auth import REASONS, AuthFailure, ReplayStoreUnavailable, build_verifier
from .config import Settings
from .cors import CorsPolicy
from .errors import Unauthorized, Unavailable
from .feedback import CardAudit
from .fhir.client import FhirClient
from .http_api import api, register_error_handlers
from .observability import AUTH_FAILURES, initialise_labels, loggable, route_label
from .retention import Pruner
from .services import SERVICES, SERVICES_BY_ID
from .storage import init_storage
from .terminology_server import terminology_server
from .warmup import warm_up

auth_log = logging.getLogger("cds_service.auth")


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the app. `create_app(testing=True)` gives an unauthenticated app for tests."""
    testing = bool(overrides.pop("testing", False))
    if settings is None:
        if testing and "database_url" not in overrides and not os.environ.get("CDS_DATABASE_URL"):
            overrides["database_url"] = "sqlite://"  # tests never write into the work tree
        settings = Settings.from_env(**overrides)
    if testing:
        from dataclasses import replace

        settings = replace(settings, auth_disabled=True)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["TESTING"] = testing
    app.extensions["cds_settings"] = settings
    app.extensions["cds_fetcher"] = FhirClient(settings)  # prefetch fallback (fhirServer)
    # The site's terminology server (CDS_TERMINOLOGY_URL); None: nothing is ever asked.
    app.extensions["cds_terminology"] = terminology_server(settings)
    database = init_storage(app, settings)  # connects lazily: starts while the database is down
    app.extensions["cds_audit"] = audit = CardAudit(database)
    audit.start()  # its writer thread, here rather than in the first hook call
    app.extensions["cds_pruner"] = Pruner(database, settings)  # retention, off the request path
    # Terminology, policy, R4B models and the engine's first run, built here (once per process,
    # in each worker) and never on the first patient's call; /readyz reports it.
    app.extensions["cds_warm"] = warm_up()
    initialise_labels(REASONS, [service.id for service in SERVICES])  # opens the metric files
    app.register_blueprint(api)
    # Matching a URL with a variable part compiles its regex: here, not on the first hook call.
    app.url_map.bind("localhost").match("/cds-services/warm-up", method="POST")
    register_error_handlers(app)
    install_auth(app, settings)
    install_cors(app, CorsPolicy(settings.cors_allowed_origins))
    return app


def install_cors(app: Flask, policy: CorsPolicy) -> None:
    """CORS headers on every response (errors too); preflights answered before authentication."""

    def preflight() -> Response | None:
        # First before_request hook, so an OPTIONS preflight never meets the JWT check.
        if request.method != "OPTIONS" or request.url_rule is None:
            return None
        origin = request.headers.get("Origin")
        response = Response(status=204, headers=policy.preflight_headers(origin))
        methods = (request.url_rule.methods or set()) - {"HEAD"}
        response.headers["Allow"] = ", ".join(sorted(methods))
        del response.headers["Content-Type"]
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, preflight)

    @app.after_request
    def _cors_headers(response: Response) -> Response:
        response.headers.update(policy.response_headers(request.headers.get("Origin")))
        response.vary.add("Origin")
        return response


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes that answer without a token (CORS preflights are answered before authentication)."""


def install_auth(app: Flask, settings: Settings) -> None:
    """Require a valid EHR JWT on every other request. With no trusted issuer configured (and auth
    not disabled) every request is refused: fail closed. A bad issuer configuration raises
    AuthConfigError here, at start-up."""
    if settings.auth_disabled:
        return
    verifier = build_verifier(settings, app.extensions["cds_db"])
    app.extensions["cds_verifier"] = verifier
    if verifier is None:
        auth_log.error("No trusted EHR issuer is configured: every request will be refused (401).")

    @app.before_request
    def _authenticate() -> None:
        if request.method == "OPTIONS" or request.path in OPEN_PATHS:
            return
        try:
            if verifier is None:
                raise AuthFailure("no-trusted-issuers")
            verifier.verify(request.headers.get("Authorization"), request.path)
        except AuthFailure as failure:
            AUTH_FAILURES.labels(reason=failure.reason).inc()
            # The reason label, the claimed issuer (bounded and escaped: unverified, chosen by
            # the sender) and the route: never the token, nor a path the sender made up.
            auth_log.info(
                "EHR token refused",
                extra={
                    "reason": failure.reason,
                    "iss": loggable(failure.iss),
                    "path": route_label(request.path, SERVICES_BY_ID),
                },
            )
            raise Unauthorized() from None
        except ReplayStoreUnavailable:
            raise Unavailable("The service cannot verify EHR tokens at the moment.") from None
