"""The configured crews: one pooled :class:`CrewClient` each, and their input catalogues.

AMP's ``GET /inputs`` gives names only; the catalogue merges them with what the configuration says
about each input (description, type, enum, default, example). The merged list is cached per crew for
:data:`INPUTS_TTL` seconds so ``list_inputs`` and kickoff validation cost no upstream request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from .client import CrewClient, Timeouts
from .errors import UsageError
from .settings import CrewConfig, InputConfig, Settings

__all__ = ["INPUTS_TTL", "Crew", "CrewRegistry", "InputInfo", "build_registry"]

INPUTS_TTL = 300.0
SIMULATOR_ROOT = "http://simulator.crew-mcp.invalid"


class InputInfo(InputConfig):
    """One crew input as the model should see it: its name plus what the configuration says about it."""

    name: str


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
            CrewAPIError: the crew could not be asked (only when nothing is cached).
        """
        cached = self._cache
        if cached and not refresh and time.monotonic() - cached[0] < INPUTS_TTL:
            return cached[1]
        async with self._lock:
            cached = self._cache
            if cached and not refresh and time.monotonic() - cached[0] < INPUTS_TTL:
                return cached[1]
            names = await self.client.inputs()
            merged = merge_inputs(names, self.config.inputs)
            self._cache = (time.monotonic(), merged)
            return merged


def merge_inputs(names: list[str], configured: dict[str, InputConfig]) -> list[InputInfo]:
    """API names first (in API order), then inputs only the configuration knows about."""
    out: list[InputInfo] = []
    for name in [*names, *(n for n in configured if n not in names)]:
        conf = configured.get(name)
        info = InputInfo(name=name, **conf.model_dump()) if conf else InputInfo(name=name)
        out.append(info)
    return out


class CrewRegistry:
    """The crews crew-mcp serves, by name."""

    def __init__(self, crews: list[Crew], *, simulator: Any = None) -> None:
        self.crews = {c.name: c for c in crews}
        self.simulator = simulator

    @property
    def simulated(self) -> bool:
        return self.simulator is not None

    def get(self, name: str | None) -> Crew:
        """The crew called ``name``; with no name, the only crew.

        Raises:
            UsageError: unknown name, or no name while several crews are configured.
        """
        if name:
            crew = self.crews.get(name)
            if crew is None:
                raise UsageError(f"Unknown crew {name!r}. Available crews: {self._names()}. Call list_crews.")
            return crew
        if len(self.crews) == 1:
            return next(iter(self.crews.values()))
        raise UsageError(f"Several crews are configured; pass crew= one of {self._names()}.")

    def _names(self) -> str:
        return ", ".join(sorted(self.crews)) or "(none)"

    async def aclose(self) -> None:
        for crew in self.crews.values():
            await crew.client.aclose()


def _client(conf: CrewConfig, transport: httpx2.AsyncBaseTransport | None = None) -> CrewClient:
    t = conf.timeouts
    return CrewClient(
        conf.url,
        conf.token.get_secret_value() if conf.token else None,
        name=conf.name,
        status_path=conf.status_path,
        timeouts=Timeouts(connect=t.connect, read=t.read, write=t.read, total=t.total),
        transport=transport,
    )


def input_config(spec: Any) -> InputConfig:
    kind = spec.type if spec.type in ("string", "integer", "number", "boolean", "object", "array") else "string"
    return InputConfig(description=spec.description, type=kind, example=spec.example, required=spec.required)


def simulator_crews(simulator: Any) -> list[CrewConfig]:
    """Crew configurations for the built-in simulator's crews (the embedded default)."""
    out = []
    for spec in simulator.crews.values():
        inputs = {i.name: input_config(i) for i in spec.inputs}
        out.append(
            CrewConfig(
                name=spec.name,
                url=f"{SIMULATOR_ROOT}/{spec.name}",
                token=simulator.token,
                description=f"[simulated] {spec.description}",
                inputs=inputs,
                simulated=True,
            )
        )
    return out


def build_registry(settings: Settings) -> CrewRegistry:
    """Build the registry; with no crew configured, start the built-in simulator in-process."""
    if settings.crews:
        return CrewRegistry([Crew(c, _client(c)) for c in settings.crews])
    from .simulator import Simulator

    sim = Simulator(time_scale=settings.simulator_time_scale)
    transport = httpx2.ASGITransport(app=sim.app)
    crews = [Crew(c, _client(c, transport)) for c in simulator_crews(sim)]
    return CrewRegistry(crews, simulator=sim)
