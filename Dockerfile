# Slim runtime image: gunicorn serving cds_service as a non-root user, configured only by environment.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CDS_DATABASE_URL=sqlite:////var/lib/cds_service/cds_service.sqlite3
RUN useradd --system --uid 10001 --home /var/lib/cds_service --create-home cds
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER cds
WORKDIR /var/lib/cds_service
EXPOSE 8080
# Trusted EHR issuers must be configured (CDS_TRUSTED_ISSUERS_JSON or _FILE): the server refuses to
# start unauthenticated.
CMD ["cds-service", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
