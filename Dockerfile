# syntax=docker/dockerfile:1
# Build stage: a wheel of the project and its runtime dependencies only (no test extras), with
# the per-frame functions compiled (gcc for Cython's C); the image must not fall back to Python.
FROM python:3.11-slim AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY relay ./relay
COPY bench ./bench
RUN pip install --no-cache-dir --upgrade pip==24.3.1 \
 && pip wheel --no-cache-dir --wheel-dir /wheels . \
 && ls /wheels/relay-*-cp311-*.whl

# Runtime stage: the wheels installed into a clean venv, run as an unprivileged user.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/relay/bin:$PATH \
    RELAY_HOST=0.0.0.0 \
    RELAY_PORT=8080 \
    RELAY_LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home relay
COPY --from=build /wheels /wheels
RUN python -m venv /opt/relay \
 && /opt/relay/bin/pip install --no-cache-dir --no-index --find-links /wheels relay \
 && rm -rf /wheels
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RELAY_PORT', '8080') + '/healthz', timeout=2)"]
# Exec form: the relay is PID 1 and receives SIGTERM directly, so it drains before exiting.
ENTRYPOINT ["relay"]
CMD ["serve"]
