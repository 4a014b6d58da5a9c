# Slim runtime image: gunicorn serving cds_service as a non-root user, configured only by
# environment (see docs/deployment.md for every variable). No test or bench dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CDS_HOST=0.0.0.0 CDS_PORT=8080 CDS_WORKERS=2 CDS_LOG_LEVEL=INFO \
    CDS_DATABASE_URL=sqlite:////var/lib/cds_service/cds_service.sqlite3 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/cds-metrics
RUN useradd --system --uid 10001 --home /var/lib/cds_service --create-home cds
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER cds
WORKDIR /var/lib/cds_service
EXPOSE 8080
# Liveness through the real HTTP stack (the image has no curl); /readyz is for the load balancer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CDS_PORT', '8080') + '/healthz', timeout=4)"]
# Trusted EHR issuers must be configured (CDS_TRUSTED_ISSUERS_JSON or _FILE): the server refuses to
# start unauthenticated. Host, port and workers come from CDS_HOST, CDS_PORT and CDS_WORKERS.
CMD ["cds-service", "serve"]
