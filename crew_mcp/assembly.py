"""The one place a service is assembled: :func:`open_service`.

The server's lifespan, the CLI, the demo (through the stdio server) and the tests all open a service here: the
crews (and the embedded simulator when none is configured), the ledger, the clock, the fleet's fan-out and leases,
the reviewer notices, telemetry, and the background tasks (retention, the simulator's clock); everything it opened
is closed on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx2

from . import errors as e
from .clock import Clock, SystemClock
from .crews import build_registry
from .fleet import Fleet, build_fleet
from .ledger import Ledger, default_ledger_url, open_ledger, run_retention, sqlite_path
from .notices import Notifier
from .redact import Redactor, install_log_redaction
from .runs import OnChange
from .service import CrewService
from .settings import Settings
from .telemetry import NO_TELEMETRY, Telemetry
from .watch import POLL_INITIAL

if TYPE_CHECKING:
    from .simulator import Simulator

__all__ = ["open_service", "simulator_state"]


def simulator_state(ledger_url: str) -> Path | None:
    """Where the embedded simulator keeps its runs: ``simulator.db`` beside a SQLite ledger, so runs outlive the
    process like the ledger's records do; None (in memory, gone with the process) for any other ledger."""
    return sqlite_path(ledger_url).parent / "simulator.db" if ledger_url.startswith("sqlite:") else None


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    simulator: Simulator | None = None,
    webhook_base: str | None = None,
    on_change: OnChange | None = None,
    poll_initial: float = POLL_INITIAL,
    telemetry: Telemetry = NO_TELEMETRY,
    fleet: Fleet | None = None,
) -> AsyncIterator[CrewService]:
    """Assemble a running service; everything it opened is closed on exit.

    Args:
        settings: the configuration.
        ledger: the ledger to use (default: the one ``settings.ledger_url`` names); the service closes it.
        clock: the time source of waits, polls, expiry and retention (default: the system clock).
        transport: replaces the network for every crew (tests).
        simulator: the embedded simulator to serve when no crew is configured (default: a new one).
        webhook_base: the URL under which this server receives AMP webhooks (HTTP only; None: no webhooks).
        on_change: told about every change subscribers should hear of.
        poll_initial: the poll loop's first interval.
        telemetry: told about upstream requests and ledger operations (the HTTP app's metrics).
        fleet: the replica's fleet pieces (default: built from the settings, see :func:`crew_mcp.fleet.build_fleet`;
            closed here only when built here).
    """
    problem = settings.notify_problem()
    if problem:  # before anything is opened
        raise e.ConfigError(problem)
    clock = clock or SystemClock()
    url = settings.ledger_url or default_ledger_url()
    state = simulator_state(url) if ledger is None else None
    registry = build_registry(settings, transport=transport, simulator=simulator, simulator_state=state)
    telemetry.attach(registry)
    store = telemetry.ledger(ledger or open_ledger(url))
    notifier = Notifier.from_settings(settings, store, clock)
    own_fleet = fleet is None
    fleet = fleet or build_fleet(settings, url)
    service = CrewService(
        settings,
        registry,
        store,
        clock,
        webhook_base=webhook_base,
        on_change=on_change,
        on_pause=notifier.paused if notifier else None,
        poll_initial=poll_initial,
        fleet=fleet,
    )
    # Entered by hand and left with no exception: an error in the caller's block must reach the caller as
    # itself, not wrapped in the background task group's ExceptionGroup.
    background = anyio.create_task_group()
    unredact = install_log_redaction(Redactor(*settings.secrets()))
    try:
        await service.detacher.__aenter__()
        await service.runs.hub.__aenter__()
        await background.__aenter__()
        background.start_soon(_retention, service)
        if notifier is not None:
            background.start_soon(notifier.run)
        await background.start(fleet.fanout.run, service.runs.forget_live)
        sim = registry.simulator
        if sim is not None and sim.clock == "wall":
            background.start_soon(sim.run_clock)
        yield service
        if notifier is not None:  # a CLI command that saw a pause exits at once: let its notice go out first
            await notifier.drain()
    finally:
        background.cancel_scope.cancel()
        await background.__aexit__(None, None, None)
        await service.runs.hub.__aexit__(None, None, None)
        await service.detacher.__aexit__(None, None, None)  # a kickoff in flight still records its kickoff_id
        with anyio.CancelScope(shield=True):  # connections and files are released even when cancelled
            await registry.aclose()
            await store.aclose()
            unredact()
            if own_fleet:
                await fleet.aclose()


async def _retention(service: CrewService) -> None:
    s = service.settings
    await run_retention(
        service.ledger,
        service.clock,
        interval=s.retention_interval_seconds,
        max_age=timedelta(days=s.retention_days),
        max_count=s.retention_max_records,
    )
