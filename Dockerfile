# lmgate in a container: `docker compose up -d` (see compose.yaml and README "Docker").
# The gateway listens on every interface of the container, so keys are required: it refuses
# to start without LMGATE_ADMIN_KEY or LMGATE_API_KEYS (or keys made with `lmgate keys`).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-compile . && rm -rf /build

# A user of its own, and its data dir (state, managed keys) as a volume.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin lmgate \
    && mkdir -p /data && chown lmgate:lmgate /data && chmod 700 /data

ENV LMGATE_HOST=0.0.0.0 \
    LMGATE_PORT=1235 \
    LMGATE_DATA_DIR=/data \
    LMGATE_UPSTREAM=http://host.docker.internal:1234

VOLUME ["/data"]
EXPOSE 1235
USER lmgate
WORKDIR /data

# /health answers without a key (unless LMGATE_REQUIRE_AUTH_FOR_HEALTH); over TLS when a
# certificate is configured.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.request as u; tls = bool(os.environ.get('LMGATE_TLS_CERT')); url = ('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('LMGATE_PORT', '1235') + '/health'; sys.exit(0 if u.urlopen(url, timeout=4, context=ssl._create_unverified_context() if tls else None).status == 200 else 1)"]

ENTRYPOINT ["lmgate"]
CMD ["serve"]
