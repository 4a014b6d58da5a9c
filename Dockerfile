# syntax=docker/dockerfile:1
# Slim runtime image: gunicorn serving cds_service as a non-root user, configured only by
# environment (see docs/deployment.md for every variable). No test or bench dependencies.
#
# The image installs the wheel built here, the same artifact tests/test_installed_wheel.py builds
# from the same inputs, installs in a fresh venv and serves with the same command (CMD below).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# CDS_STATE_DIR holds the default SQLite database (mount a volume there, or set CDS_DATABASE_URL).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CDS_HOST=0.0.0.0 CDS_PORT=8080 CDS_WORKERS=2 CDS_LOG_LEVEL=INFO \
    CDS_STATE_DIR=/var/lib/cds_service \
    PROMETHEUS_MULTIPROC_DIR=/tmp/cds-metrics
RUN useradd --system --uid 10001 --home /var/lib/cds_service --create-home cds
# The wheel is read from the build stage through a bind mount: no layer of this image holds it.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl
USER cds
WORKDIR /var/lib/cds_service
EXPOSE 8080
# Liveness through the real HTTP stack (the image has no curl); /readyz is for the load balancer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CDS_PORT', '8080') + '/healthz', timeout=4)"]
# Trusted EHR issuers must be configured (CDS_TRUSTED_ISSUERS_JSON or _FILE): the server refuses to
# start unauthenticated. Host, port and workers come from CDS_HOST, CDS_PORT and CDS_WORKERS.
CMD ["cds-service", "serve"]
