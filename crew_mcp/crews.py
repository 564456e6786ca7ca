"""The configured crews: one pooled :class:`CrewClient` each, and their input catalogues.

The merged input catalogue (see :mod:`crew_mcp.inputs`) is cached per crew for :data:`INPUTS_TTL` seconds
so ``list_inputs`` and kickoff validation cost no upstream request. With no crew configured, the registry
serves the built-in simulator's crews in-process (the embedded default).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast, get_args

import anyio
import httpx2

from .client import CrewClient, Timeouts
from .crewconfig import CrewConfig, InputConfig, InputType
from .errors import UnknownCrewError
from .identity import Caller
from .inputs import InputInfo, merge_inputs
from .settings import Settings

if TYPE_CHECKING:
    from .simulator import InputSpec, Simulator

__all__ = ["INPUTS_TTL", "SIMULATOR_ROOT", "Crew", "CrewRegistry", "build_registry", "simulator_crews"]

INPUTS_TTL = 300.0
SIMULATOR_ROOT = "http://simulator.crew-mcp.invalid"


@dataclass
class Crew:
    """A configured crew: its settings, its client and its cached input catalogue."""

    config: CrewConfig
    client: CrewClient
    _cache: tuple[float, list[InputInfo]] | None = None
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def name(self) -> str:
        return self.config.name

    async def inputs(self, *, refresh: bool = False) -> list[InputInfo]:
        """The crew's inputs: ``GET /inputs`` merged with the configuration, cached.

        Raises:
            CrewAPIError: the crew could not be asked (only when nothing fresh is cached).
        """
        if (cached := self._fresh(refresh)) is not None:
            return cached
        async with self._lock:
            if (cached := self._fresh(refresh)) is not None:
                return cached
            merged = merge_inputs(await self.client.inputs(), self.config.inputs)
            self._cache = (time.monotonic(), merged)
            return merged

    def _fresh(self, refresh: bool) -> list[InputInfo] | None:
        cached = self._cache
        if cached and not refresh and time.monotonic() - cached[0] < INPUTS_TTL:
            return cached[1]
        return None


class CrewRegistry:
    """The crews crew-mcp serves, by name (and the embedded simulator behind them, if any)."""

    def __init__(self, crews: list[Crew], *, simulator: Simulator | None = None, owns_simulator: bool = False) -> None:
        self.crews = {c.name: c for c in crews}
        self.simulator = simulator
        self._owns_simulator = owns_simulator

    @property
    def simulated(self) -> bool:
        """True when every crew is one of the embedded simulator's (no crew is configured)."""
        return bool(self.crews) and all(c.config.simulated for c in self.crews.values())

    def get(self, name: str | None) -> Crew:
        """The crew called ``name``; with no name, the only crew.

        Raises:
            UnknownCrewError: unknown name, or no name while several crews are configured.
        """
        return self._pick(name, sorted(self.crews))

    def for_caller(self, name: str | None, caller: Caller | None) -> Crew:
        """The crew ``name`` (with no name, the only one) among those ``caller`` may use; a crew it may not use is
        refused exactly like an unknown one, naming only the crews it may use.

        Raises:
            UnknownCrewError: no such crew for this caller, or several and none named.
        """
        if caller is None or caller.crews is None:
            return self.get(name)
        mine = sorted(n for n in self.crews if caller.may_use(n))
        if not mine:
            raise UnknownCrewError(
                "No crew is open to you on this server; ask the person who runs crew-mcp to give you access."
            )
        return self._pick(name, mine)

    def _pick(self, name: str | None, names: list[str]) -> Crew:
        """The crew ``name`` among ``names`` (sorted); with no name, the only one of them."""
        available = ", ".join(names) or "(none)"
        if name:
            if name not in names:
                raise UnknownCrewError(f"Unknown crew {name!r}. Available crews: {available}. Call list_crews.")
            return self.crews[name]
        if len(names) == 1:
            return self.crews[names[0]]
        raise UnknownCrewError(f"Several crews are configured; pass crew= one of {available}.")

    async def aclose(self) -> None:
        """Close every crew's connection pool (and the embedded simulator's state file)."""
        for crew in self.crews.values():
            await crew.client.aclose()
        if self.simulator is not None and self._owns_simulator:
            await self.simulator.aclose()


def build_registry(
    settings: Settings,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    simulator: Simulator | None = None,
    simulator_state: Path | None = None,
) -> CrewRegistry:
    """The crews of ``settings``; with none configured, the embedded simulator's (``simulator`` or a new one).

    ``transport`` replaces the network for every crew (tests; the embedded simulator uses its ASGI app).
    ``simulator_state`` is the file a new embedded simulator keeps its runs in, so they go on across processes
    as they would on AMP (clients that start a server per call); None keeps them in memory.
    """
    if settings.crews and simulator is None:
        return CrewRegistry([Crew(c, crew_client(c, transport)) for c in settings.crews])
    owned = simulator is None
    if simulator is None:
        from .simulator import Simulator

        simulator = Simulator(time_scale=settings.simulator_time_scale, state_path=simulator_state)
    transport = transport or httpx2.ASGITransport(app=simulator.app)
    configs = settings.crews or simulator_crews(simulator)
    crews = [Crew(c, crew_client(c, transport)) for c in configs]
    return CrewRegistry(crews, simulator=simulator, owns_simulator=owned)


def crew_client(conf: CrewConfig, transport: httpx2.AsyncBaseTransport | None = None) -> CrewClient:
    """A pooled client for one configured crew."""
    t = conf.timeouts
    return CrewClient(
        conf.url,
        conf.token.get_secret_value() if conf.token else None,
        name=conf.name,
        status_path=conf.status_path,
        timeouts=Timeouts(connect=t.connect, read=t.read, write=t.read, total=t.total),
        transport=transport,
    )


def input_config(spec: InputSpec) -> InputConfig:
    """What the configuration would say about a simulated crew's input."""
    kind = cast("InputType", spec.type if spec.type in get_args(InputType) else "string")
    return InputConfig(description=spec.description, type=kind, example=spec.example, required=spec.required)


def simulator_crews(simulator: Simulator) -> list[CrewConfig]:
    """Crew configurations for the built-in simulator's crews (the embedded default)."""
    return [
        CrewConfig(
            name=spec.name,
            url=f"{SIMULATOR_ROOT}/{spec.name}",
            token=simulator.token,
            description=f"[simulated] {spec.description}",
            inputs={i.name: input_config(i) for i in spec.inputs},
            simulated=True,
        )
        for spec in simulator.crews.values()
    ]
