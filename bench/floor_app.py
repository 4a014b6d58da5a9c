"""The framework's floor: a minimal Flask app that parses the body and answers no cards."""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024


@app.get("/cds-services")
def discovery() -> Response:
    return Response(b'{"services": []}', mimetype="application/json")


@app.post("/cds-services/<service_id>")
def service(service_id: str) -> Response:
    orjson.loads(request.get_data(cache=False))
    return Response(orjson.dumps({"cards": []}), mimetype="application/json")
