# crew-mcp as a container (docs/deploy.md). Default: the MCP server over stdio, for hosts that launch
#   docker run -i --rm -v crew-mcp-data:/data -e CREW_MCP_CREW_URL -e CREW_MCP_CREW_TOKEN crew-mcp
# Over HTTP: docker run --network host crew-mcp serve --http --host 127.0.0.1 --port 8000
# (crew-mcp binds only loopback addresses until it has remote authentication, see docs/deploy.md).
# The run ledger lives in /data: mount a volume there to keep runs across containers.
#
# Build: scripts/build-image (makes a Debian base locally when no registry answers, trusts the host's extra CAs),
# or anywhere with a registry: docker build -t crew-mcp .
# Debian's own Python in both stages (the official python images lay out `pip install --prefix` differently):
# the builder installs crew-mcp into a virtual environment at /opt/venv, the runtime stage copies it whole.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS builder
# Extra CA certificates (a TLS-intercepting proxy's), trusted for this stage's downloads only. Debian's pip
# uses its own CA bundle unless told otherwise, hence PIP_CERT.
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crew_mcp ./crew_mcp
# pip and setuptools only install: the runtime never needs them (about 25 MB). metrics and otel: /metrics and
# OpenTelemetry traces for deployments (docs/operations.md); both stay idle unless used.
RUN /opt/venv/bin/pip install --quiet '.[redis,metrics,otel]' \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE}
# tini as PID 1 forwards signals (docker stop ends a stdio server at once) and reaps children.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin \
 && groupadd --gid 10001 crew \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin crew \
 && mkdir /data && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/crew-mcp/healthcheck.py
# The registry checks that an OCI package carries its server name (manifests/server.json).
LABEL io.modelcontextprotocol.server.name="io.github.crew-mcp/crew-mcp" \
      org.opencontainers.image.title="crew-mcp" \
      org.opencontainers.image.description="MCP server that runs CrewAI AMP crews" \
      org.opencontainers.image.licenses="MIT"
# A numeric user, so Kubernetes can verify runAsNonRoot. No bytecode writes: the root filesystem may be read-only.
USER 10001:10001
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CREW_MCP_LEDGER_URL=sqlite:////data/ledger.db
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# Over HTTP: /healthz on whatever port the server listens on; over stdio: the server process is alive.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/opt/venv/bin/python", "/opt/crew-mcp/healthcheck.py"]
ENTRYPOINT ["/usr/bin/tini", "--", "crew-mcp"]
CMD ["serve"]
