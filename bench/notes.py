"""The analysis part of docs/benchmarks.md: where the time goes, from profiles taken while writing the benchmarks.

These figures come from a profiling session (cProfile of crew-mcp in-process, and timing each layer of
``CrewService.status`` separately against the same simulator), not from the run above; they explain its ratios.
"""

NOTES = """## Where the time goes (profiles, 2026-11-23)

Measured separately from the run above with cProfile (crew-mcp in-process behind the SDK client) and by timing each
layer of a running run's `get_status` on its own against the same simulator (medians of 300 calls):

| layer | time per call |
|---|---:|
| raw httpx2 GET through a shared client (the REST floor) | 0.82 ms |
| `CrewClient.status` (retry policy, deadline, status-path choice, `normalize_status`) | 0.95 ms |
| `CrewService.status`, running run (the above + 1 ledger read; a write only when the status changed) | 1.53 ms |
| `CrewService.status`, finished run (1 ledger read, no upstream) | 0.19 ms |
| SQLite `ledger.get` / `ledger.save_status` (each a worker-thread hop) | 0.23 ms / 0.48 ms |
| SDK client: jsonschema validation of crew-mcp's `RunView` output (floor's dict: 0.004 ms) | 0.25 ms |
| whole `get_status` in-process (`Client(server)`, no transport), finished run vs floor `echo` | 1.10 ms vs 0.29 ms |

Since commit bf44727 (another change, landed while these benchmarks were written) a status read writes the ledger
only when the status changed, and no longer re-reads the record afterwards; the table is for that code.

- **Fixed while writing these benchmarks: a 40 ms stall on every keep-alive HTTP response.** `crew-mcp serve --http`
  (`crew_mcp/app.py`) and the simulator (`crew_mcp/simulator/serve.py`) created their listening socket with
  `socket.socket(AF_INET)`, i.e. `proto=0`; asyncio only sets `TCP_NODELAY` on sockets whose `proto` is
  `IPPROTO_TCP`, so every response written in two parts (headers, then body) waited for the client's delayed ACK:
  a shared-client GET to the simulator took 44 ms instead of 1 ms, and reusing connections was slower than opening
  a new one. Both now pass `IPPROTO_TCP`. (tests/test_http.py and tests/hitl_support.py still bind their own
  sockets the old way; their servers are slow for the same reason.)
- **Figure 1 (running run vs floor).** The floor's tool is one GET returning the crew's JSON. crew-mcp's
  `get_status` on a running run reads the record from the ledger (a SQLite query in a worker thread, ≈0.2 ms),
  does the GET through `CrewClient` (≈0.1–0.6 ms over the raw GET depending on load: stamina retry context,
  deadline bookkeeping, pydantic normalisation into `ExecutionStatus`), then builds a `RunView` with a text rendering
  and structured content, which the SDK serialises; the SDK *client* then validates that structured content against
  crew-mcp's output schema with jsonschema (0.25 ms for `RunView`'s nested `$ref`/`anyOf` schema, 0.004 ms for the
  floor's plain object; the largest single hotspot in a cProfile of the call), a cost every Python-SDK host pays.
  What would close the gap: (1) a flatter `RunView` output schema (no `anyOf`/`$ref`; optional fields as plain
  types) to cut client validation; (2) serve the ledger read without a thread hop for hot records (a small
  in-process cache of records this process wrote, invalidated on write); (3) build the `RunView` text lazily or
  shorter for running runs. Together these are worth roughly the ≈0.5–1 ms p50 difference.
- **Figure 2 (finished run vs echo).** No upstream request is made (the ledger answers). In-process, without the
  stdio transport, the call costs 1.10 ms against `echo`'s 0.29 ms: the service work (one SQLite read in a worker
  thread) is 0.13 ms, the client's jsonschema validation of the `RunView` ≈0.3 ms, and the rest is building the
  view, its text and its structured content and moving ≈1 KB instead of a short string through the SDK on both
  sides. `echo` is a floor no tool that returns a run can reach; closing the gap to 1.2× would need a much smaller
  answer for finished runs (e.g. text plus a flat schema without `anyOf`/`$ref`) and the ledger read without a
  thread hop (an in-memory cache of final records, which never change).
- **Figure 3 (HTTP throughput).** On 2 cores the load generator (the SDK clients, in the bench process), the
  simulator and the server share the CPU, so the server's own cost (last column of the table) is the clearer
  number: crew-mcp spends about 1 ms more CPU per `get_status` than the floor (before the log-level fix below it was
  3–4 ms more, and the ratios were 0.4–0.7×). By cProfile of `crew-mcp serve --http` under 8 clients, that
  millisecond is the figure 1 path: the ledger read and its thread hop, `CrewClient` around the GET, building and
  serialising the `RunView` (pydantic `to_python` ≈0.4 ms per call under the profiler) and its text; the floor does
  one GET and returns the JSON dict. At 8–32 clients the extra work also queues behind the simulator and the load
  generator on the same 2 cores, so the calls/s ratio is lower than the CPU ratio. The levers are those of figure 1.
- **Also fixed: `crew-mcp serve --http` logged at INFO whatever `CREW_MCP_LOG_LEVEL` said** (`crew_mcp/cli.py`): one
  `INFO httpx2: HTTP Request ...` line on stderr for every upstream request and one per MCP session, thousands per
  benchmark run. It now uses the configured level (default WARNING) as stdio does; `-v` still gives INFO.
- **Figure 4 (cold start).** Both servers pay the SDK import (≈0.8–0.9 s of `import mcp.server` here, see the SDK
  notes §10). crew-mcp adds, by `-X importtime` and cProfile: its own modules ≈75 ms (`crew_mcp.server` and the
  models, views, service, ledger it imports; `cli.py` already defers everything else); `build_server` ≈145 ms, most
  of it the SDK deriving pydantic argument models and output schemas for ~10 tools and 5 resources with rich
  `Annotated[...]` signatures (`func_metadata`); and in the lifespan one `httpx2.AsyncClient` per configured crew,
  each building its own SSL context with the OS trust store (≈27 ms each, `load_verify_locations`, even for
  `http://` crews). What would close the gap: share one SSL context across crews' clients (created once, lazily);
  defer the `run_<crew>` typed tools' schema building; and open the ledger lazily. These parts are measured under
  profilers, which inflate them; the unprofiled difference is the cold-start table's (≈140–180 ms when this
  was written), and the no-config start (simulated crews, in-process transport) came out at 1.12–1.15×.
- **Figure 5.** One shared poll loop per execution (`crew_mcp/watch.py`): 100 waiting clients cost the same upstream
  requests as one.
"""
