# syntax=docker/dockerfile:1
# dripline's image: one image for every role, the command picks it
# (`serve`, `run`, `db upgrade`, ...). See docs/deploy.md and compose.yaml.
#
#   docker build -t dripline .
#   docker run --rm dripline --version

# --- builder: build the wheel and install it (with its dependencies) into a virtualenv.
# Every dependency ships binary wheels for linux/amd64 and arm64; if one ever needs a
# compiler, it is installed here and never reaches the final image.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install build==1.6.1
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m build --wheel --outdir /dist . \
    && python -m venv /opt/dripline \
    && /opt/dripline/bin/pip install /dist/*.whl

# --- final: the interpreter, the virtualenv and the example flows; no build tools.
FROM python:3.11-slim
ENV PATH=/opt/dripline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DRIPLINE_HOST=0.0.0.0 \
    DRIPLINE_PORT=8080 \
    DRIPLINE_FLOWS_DIR=/app/flows \
    DRIPLINE_LOG_FORMAT=json \
    HEALTHCHECK_URL=http://127.0.0.1:8080/readyz
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin dripline
COPY --from=builder /opt/dripline /opt/dripline
# The repository's example flows; mount your own folder over /app/flows.
COPY --chown=dripline:dripline flows /app/flows
WORKDIR /app
RUN chown dripline:dripline /app
USER 10001:10001
EXPOSE 8080 9100
# /readyz of `dripline serve`: 200 when the database answers, the schema is current, the
# circuit breaker is closed and stored webhooks are being applied; 503 (unhealthy) with
# a JSON body naming what is not. Workers (`dripline run --metrics-port 9100`) set
# HEALTHCHECK_URL=http://127.0.0.1:9100/readyz. /healthz (process alive) on both ports.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["dripline"]
CMD ["serve"]
