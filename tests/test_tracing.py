"""OpenTelemetry traces: one trace per tool call, the service and upstream spans inside it, ``traceparent`` at the crew.

Spans are captured with the SDK's in-memory exporter (installed once in this process, see obs_support). The
``OTEL_*`` configuration and the no-SDK path run in child processes: a tracer provider can be installed only once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from hitl_support import OWNER, instant_review_crew, ok, service_opener
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from obs_support import HeaderLog, spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from crew_mcp.server import build_server
from crew_mcp.settings import Settings
from crew_mcp.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """The names of a span's ancestors, nearest first."""
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_each_tool_call_is_one_trace_holding_its_upstream_spans_whose_traceparent_reaches_the_crew() -> None:
    exporter = spans()
    sim = Simulator([instant_review_crew()], clock="manual")
    crew = HeaderLog(sim.app)
    opener = service_opener(sim, transport=httpx2.ASGITransport(app=crew))
    async with sim, Client(build_server(Settings(owner=OWNER), opener=opener)) as client:
        exporter.clear()  # the handshake's spans
        kickoff_id = (await ok(client, "kickoff_crew", {"crew": "instant"}))["kickoff_id"]
        await ok(client, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": 10})
        await ok(client, "resume_with_feedback", {"kickoff_id": kickoff_id, "approve": True})
        await ok(client, "get_status", {"kickoff_id": kickoff_id, "wait_seconds": 10})
        unknown = await client.call_tool("kickoff_crew", {"crew": "no_such_crew"})
        assert unknown.is_error

    finished = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished if s.context is not None}
    calls = [s for s in finished if s.kind is SpanKind.SERVER and s.name.startswith("tools/call ")]
    assert [s.name for s in sorted(calls, key=lambda s: s.start_time or 0)] == [
        "tools/call kickoff_crew",
        "tools/call get_status",
        "tools/call resume_with_feedback",
        "tools/call get_status",
        "tools/call kickoff_crew",
    ]
    traces = {s.context.trace_id: s for s in calls if s.context is not None}
    assert len(traces) == len(calls)  # one trace per tool call

    ours = [s for s in finished if s.instrumentation_scope is not None and s.instrumentation_scope.name == "crew_mcp"]
    upstream = [s for s in ours if s.kind is SpanKind.CLIENT]
    service = [s for s in ours if s.kind is SpanKind.INTERNAL]
    for span in ours:
        assert span.context is not None and span.context.trace_id in traces, span.name
        tool_call = traces[span.context.trace_id]
        assert tool_call.name in ancestors(span, by_id), span.name  # inside its tool call's trace
    for span in service:
        assert span.parent is not None and by_id[span.parent.span_id].kind is SpanKind.SERVER  # right under it

    def nearest(span: ReadableSpan) -> str:
        return ancestors(span, by_id)[0]

    shape = [
        [(s.name, nearest(s)) for s in sorted(ours, key=lambda s: s.start_time or 0) if s.context.trace_id == trace_id]
        for trace_id, _ in sorted(traces.items(), key=lambda kv: kv[1].start_time or 0)
    ]
    assert shape == [
        [
            ("crew_mcp.kickoff", "tools/call kickoff_crew"),
            ("GET /inputs", "crew_mcp.kickoff"),
            ("POST /kickoff", "crew_mcp.kickoff"),
        ],
        [("crew_mcp.status", "tools/call get_status"), ("GET /status", "crew_mcp.status")],
        [("crew_mcp.resume", "tools/call resume_with_feedback"), ("POST /resume", "crew_mcp.resume")],
        [("crew_mcp.status", "tools/call get_status"), ("GET /status", "crew_mcp.status")],
        [("crew_mcp.kickoff", "tools/call kickoff_crew")],
    ]
    failed = [s for s in service if s.status.status_code is StatusCode.ERROR]
    assert [(s.name, s.attributes and s.attributes.get("error.type")) for s in failed] == [
        ("crew_mcp.kickoff", "UnknownCrewError")
    ]

    # Every request reached the crew with the traceparent of its own upstream span, and nothing else did.
    assert sorted(parent or "" for _, _, parent in crew.seen) == sorted(traceparent(s) for s in upstream)
    assert [(m, p) for m, p, _ in crew.seen] == [
        ("GET", "/instant/inputs"),
        ("POST", "/instant/kickoff"),
        ("GET", f"/instant/status/{kickoff_id}"),
        ("POST", "/instant/resume"),
        ("GET", f"/instant/status/{kickoff_id}"),
    ]
    for span in upstream:
        attributes = dict(span.attributes or {})
        assert attributes["http.response.status_code"] == 200
        assert attributes["crew_mcp.crew"] == "instant"
        assert "authorization" not in json.dumps(attributes).lower()


async def test_a_failed_upstream_request_is_a_failed_span() -> None:
    exporter = spans()
    sim = Simulator([instant_review_crew()], clock="manual")
    sim.faults("instant").fail_next(1, status=401)
    async with sim, Client(build_server(Settings(owner=OWNER), opener=service_opener(sim))) as client:
        exporter.clear()
        with pytest.raises(Exception, match="refused crew-mcp's token"):
            await client.call_tool("kickoff_crew", {"crew": "instant"})
    (request,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT and s.name == "GET /inputs"]
    assert request.status.status_code is StatusCode.ERROR
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 401


def run_python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter with only ``env`` (plus PATH and PYTHONPATH); its stdout."""
    child = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_otel_variables_nothing_is_installed_and_no_header_is_sent() -> None:
    out = run_python(
        """
        import os, sys, anyio, httpx2
        from crew_mcp.client import CrewClient
        from crew_mcp.server import build_server
        from crew_mcp.settings import Settings
        from crew_mcp.simulator import Simulator
        from crew_mcp import tracing

        seen = []
        async def main():
            sim = Simulator(clock="manual")
            async def log(scope, receive, send):
                seen.append(dict(scope["headers"]).get(b"traceparent"))
                await sim.app(scope, receive, send)
            async with CrewClient("http://sim/research", "sim-token", transport=httpx2.ASGITransport(app=log)) as c:
                await c.inputs()
        print(tracing.configure(os.environ))
        build_server(Settings())
        anyio.run(main)
        print(seen, tracing.active())
        print(sorted({m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.sdk")}))
        print("prometheus_client" in sys.modules)
        """,
        OTEL_SERVICE_NAME="ignored-without-an-exporter",
    )
    assert out.split("\n")[:4] == ["None", "[None] False", "[]", "False"]


def test_otel_variables_install_the_sdk_with_the_named_exporter_and_crew_mcp_as_the_service() -> None:
    probe = """
        import os
        from opentelemetry import trace
        from crew_mcp import tracing
        print(tracing.configure(os.environ))
        provider = trace.get_tracer_provider()
        print(provider.resource.attributes["service.name"], provider.resource.attributes["service.version"])
        print(sorted(type(p.span_exporter).__name__ for p in provider._active_span_processor._span_processors))
    """
    console = run_python(probe, OTEL_TRACES_EXPORTER="console").split("\n")
    assert console[:3] == ["OpenTelemetry traces to console", "crew-mcp 0.1.0", "['ConsoleSpanExporter']"]

    otlp = run_python(
        probe,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1",
        OTEL_SERVICE_NAME="crews-eu",
        OTEL_BSP_SCHEDULE_DELAY="1",
    ).split("\n")
    assert otlp[:3] == ["OpenTelemetry traces to otlp", "crews-eu 0.1.0", "['OTLPSpanExporter']"]

    none = run_python(probe, OTEL_TRACES_EXPORTER="none").split("\n")
    assert none[:3] == ["OpenTelemetry traces to no exporter", "crew-mcp 0.1.0", "[]"]


def test_otel_variables_that_cannot_be_honoured_fail_clearly_or_are_switched_off() -> None:
    out = run_python(
        """
        from crew_mcp import tracing
        from crew_mcp.errors import ConfigError
        print(tracing.configure({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}))
        try:
            tracing.configure({"OTEL_TRACES_EXPORTER": "zipkin"})
        except ConfigError as exc:
            print(exc)
        print(tracing.active())
        """
    ).split("\n")
    assert out[0] == "None"
    assert "'zipkin', which is not installed" in out[1] and "console" in out[1] and "otlp" in out[1]
    assert out[2] == "False"


@pytest.mark.slow
async def test_a_stdio_server_exporting_to_the_console_keeps_stdout_for_mcp(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "CREW_MCP_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db",
        "OTEL_TRACES_EXPORTER": "console",
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "crew_mcp", "serve"], cwd=str(tmp_path), env=env)
    garbage: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            garbage.append(message)

    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as errlog, anyio.fail_after(60):
        async with Client(stdio_client(params, errlog=errlog), message_handler=on_message) as client:
            crews = await ok(client, "list_crews", {})
            assert crews["simulated"] is True
    assert garbage == []
    assert '"name": "tools/call list_crews"' in stderr.read_text()  # exported at shutdown, on stderr


def test_commands_that_need_no_mcp_server_never_load_opentelemetry() -> None:
    out = run_python(
        """
        import sys
        import crew_mcp.cli, crew_mcp.service, crew_mcp.client
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "prometheus_client"))))
        """
    )
    assert out.strip() == "[]"


def test_a_tracer_provider_installed_before_crew_mcp_is_left_alone() -> None:
    from opentelemetry import trace

    from crew_mcp.tracing import configure

    spans()
    installed = trace.get_tracer_provider()

    said = configure({"OTEL_TRACES_EXPORTER": "console"})

    assert said == "an OpenTelemetry tracer provider installed before crew-mcp started"
    assert trace.get_tracer_provider() is installed
