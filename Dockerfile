# fraudstream sidecar: CPU-only XGBoost, RocksDB state, no broker inside.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fraudstream fraudstream
COPY flows flows
COPY state state
COPY models models
COPY replay replay
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 fraudstream
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER fraudstream
WORKDIR /home/fraudstream
VOLUME ["/home/fraudstream/var"]
# Settings come from FRAUDSTREAM_KAFKA_* (secrets via the orchestrator) and flags.
# Metrics bind to loopback unless --metrics-addr says otherwise (e.g. 0.0.0.0 in a pod).
ENTRYPOINT ["fraudstream", "run"]
CMD ["--state-dir", "var/state", "--recovery-dir", "var/recovery", "--registry", "var/registry", "--metrics-port", "9400"]
