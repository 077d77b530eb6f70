# syntax=docker/dockerfile:1
# phonet-producer: Phonet PBX call events into RabbitMQ.
# Multi-stage: build a virtualenv with the package, copy it into a slim runtime that runs
# as uid 10001 and writes nowhere but /tmp and the spool directory (read-only root friendly).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY producer ./producer
COPY phonet_client ./phonet_client
# phonet_simulator (the fake PBX of the demo and the tests) is left out of the image.
# uvloop: measured ~10% less CPU per event (tests/bench/RESULTS.md); used automatically.
RUN /opt/venv/bin/pip install ".[uvloop]" \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="phonet-producer" \
      org.opencontainers.image.description="Phonet cloud PBX WebSocket events into a RabbitMQ topic exchange" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --gid 10001 phonet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin phonet \
 && mkdir -p /var/lib/phonet-producer/spool \
 && chown 10001:10001 /var/lib/phonet-producer/spool
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    METRICS_PORT=9120
WORKDIR /tmp
USER 10001:10001
EXPOSE 9120
ENTRYPOINT ["phonet-producer"]
