# syntax=docker/dockerfile:1
#
# profilestore container image.
#
# Databases: in production point the service at PostgreSQL (the image ships the `postgres` extra,
# i.e. psycopg[binary]):
#   PROFILESTORE_DATABASE_URL=postgresql+psycopg://user:pw@db/profilestore         (data database)
#   PROFILESTORE_KEYSTORE_URL=postgresql+psycopg://user:pw@keydb/profilestore_keys (key store; keep it
#                             apart from the data and its backups)
# Without them it falls back to SQLite files under PROFILESTORE_DATA_DIR (/var/lib/profilestore);
# mount a volume there if you rely on that.
#
# Master key: the image sets PROFILESTORE_ENVIRONMENT=production, which deliberately refuses to start
# (migrate and serve exit with "configuration error: ... production refuses to start without an
# explicit master key") unless PROFILESTORE_MASTER_KEY (base64 of 32 random bytes) or
# PROFILESTORE_MASTER_KEY_FILE (e.g. a mounted secret, /run/secrets/profilestore_master_key) is set.
#
#   docker build -t profilestore .
#   docker run -p 8000:8000 -e PROFILESTORE_MASTER_KEY=... -e PROFILESTORE_DATABASE_URL=... \
#              -e PROFILESTORE_KEYSTORE_URL=... profilestore

# ---- builder: the project and its PostgreSQL driver in a venv ---------------------------------
FROM python:3.11-slim AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY profilestore/ ./profilestore/
RUN pip install --no-cache-dir '.[postgres]'

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    PROFILESTORE_ALEMBIC_INI=/app/alembic.ini \
    PROFILESTORE_DATA_DIR=/var/lib/profilestore \
    PROFILESTORE_HOST=0.0.0.0 \
    PROFILESTORE_PORT=8000 \
    PROFILESTORE_ENVIRONMENT=production

RUN groupadd --system --gid 10001 profilestore \
    && useradd --system --uid 10001 --gid profilestore --home-dir /var/lib/profilestore \
       --no-create-home --shell /usr/sbin/nologin profilestore \
    && mkdir -p /var/lib/profilestore \
    && chown profilestore:profilestore /var/lib/profilestore \
    && chmod 0700 /var/lib/profilestore

COPY --from=builder /opt/venv /opt/venv

# The Alembic environments of the data database and the key store (read-only, owned by root).
WORKDIR /app
COPY alembic.ini ./
COPY migrations/ ./migrations/

USER profilestore:profilestore

EXPOSE 8000

# Liveness only (/healthz); /readyz also checks both databases. No curl in slim: use urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PROFILESTORE_PORT', '8000'), timeout=4)"]

# Migrate both databases, then serve (`serve` migrates again on start, which is a no-op at head).
# `exec` makes the server PID 1 so it receives SIGTERM from `docker stop`. Kept as CMD so one-off
# commands can replace it: docker run --rm ... profilestore profilestore migrate
CMD ["sh", "-c", "profilestore migrate && exec profilestore serve"]
