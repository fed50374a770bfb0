# fraudstream sidecar: CPU-only XGBoost, RocksDB state, no broker inside.
#
# Build:   docker build -t fraudstream .            (or: buildah build -t fraudstream .)
#          make image                                (buildah, podman or docker: deploy/build-image.sh)
# Run:     configuration by environment only (FRAUDSTREAM_<OPTION>, FRAUDSTREAM_KAFKA_*), e.g.
#          docker run -e FRAUDSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
#            -v fs-state:/var/lib/fraudstream/state -v fs-recovery:/var/lib/fraudstream/recovery \
#            -v ./registry:/var/lib/fraudstream/registry -p 9400:9400 fraudstream
#          (`--entrypoint fraudstream IMAGE config show` prints the settings it would use)
#
# Offline builds (no package index reachable from the build): make image OFFLINE=1 downloads
# the wheels on the host and passes them as the `wheelhouse` build context, with PIP_NO_INDEX=1.
# Hosts that cannot pull python:3.11-slim-bookworm: make image BASE_IMAGE=local builds a
# stand-in from Debian's own packages (debootstrap, python3.11) and uses it as PYTHON_IMAGE.
# Both stages must share PYTHON_IMAGE: the virtual environment is bound to its interpreter path.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Pre-fetched wheels; empty unless a `wheelhouse` build context replaces this stage.
FROM scratch AS wheelhouse

FROM ${PYTHON_IMAGE} AS build
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_FIND_LINKS=/wheelhouse
RUN python3 -m venv /opt/fraudstream
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fraudstream fraudstream
COPY flows flows
COPY state state
COPY models models
COPY replay replay
# The wheel, then it and its pinned dependencies into the venv; no pip left behind to run.
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    /opt/fraudstream/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/fraudstream/bin/pip install /wheels/fraudstream-*.whl \
    && /opt/fraudstream/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 fraudstream \
    && useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin fraudstream \
    && mkdir -p /var/lib/fraudstream/state /var/lib/fraudstream/recovery \
        /var/lib/fraudstream/registry \
    && chown -R 10001:10001 /var/lib/fraudstream
COPY --from=build /opt/fraudstream /opt/fraudstream
# The metrics endpoint binds to loopback by default (the CLI's safe choice on a shared host);
# in a container the kubelet, the scraper and the HEALTHCHECK reach it through the container's
# own network namespace, so it must listen on every interface there.
ENV PATH=/opt/fraudstream/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FRAUDSTREAM_STATE_DIR=/var/lib/fraudstream/state \
    FRAUDSTREAM_RECOVERY_DIR=/var/lib/fraudstream/recovery \
    FRAUDSTREAM_REGISTRY=/var/lib/fraudstream/registry \
    FRAUDSTREAM_METRICS_PORT=9400 \
    FRAUDSTREAM_METRICS_ADDR=0.0.0.0
# State and recovery must outlive the container (exact resume); the registry is mounted
# writable (the canary auto-halt appends to its stages.jsonl).
VOLUME ["/var/lib/fraudstream/state", "/var/lib/fraudstream/recovery"]
USER 10001:10001
WORKDIR /var/lib/fraudstream
EXPOSE 9400
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['FRAUDSTREAM_METRICS_PORT'], timeout=2)"]
ENTRYPOINT ["fraudstream", "run"]
