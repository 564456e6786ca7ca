# crew-mcp as a container. Default: the MCP server over stdio, for hosts that launch
#   docker run -i --rm -e CREW_MCP_CREW_URL -e CREW_MCP_CREW_TOKEN crew-mcp
# The run ledger lives in /data (mount a volume to keep runs across containers).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crew_mcp ./crew_mcp
RUN pip install --no-cache-dir --prefix=/install '.[redis]'

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 crew && mkdir /data && chown crew /data
COPY --from=build /install /usr/local
USER crew
ENV CREW_MCP_LEDGER_URL=sqlite:////data/ledger.db \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
ENTRYPOINT ["crew-mcp"]
CMD ["serve"]
