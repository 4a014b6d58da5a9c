"""The Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask

from .config import Settings
from .domain.policy import load_policy
from .domain.terminology import all_value_sets
from .http_api import api, register_error_handlers


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the app. `create_app(testing=True)` gives an unauthenticated app for tests."""
    testing = bool(overrides.pop("testing", False))
    if settings is None:
        settings = Settings.from_env(**overrides)
    if testing:
        from dataclasses import replace

        settings = replace(settings, auth_disabled=True)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["TESTING"] = testing
    app.extensions["cds_settings"] = settings
    # Load terminology and policy at start-up, never per request.
    all_value_sets()
    load_policy()
    app.register_blueprint(api)
    register_error_handlers(app)
    return app
