"""What a running server shares between its lifespan, its tools and resources, and (over HTTP) the app's routes."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp.server.mcpserver.exceptions import ToolError

from .service import CrewService
from .subscriptions import Subscriptions
from .telemetry import NO_TELEMETRY, Telemetry

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """What the server's lifespan shares with its tools, resources and (over HTTP) the app's own routes."""

    subscriptions: Subscriptions = field(default_factory=Subscriptions)
    service: CrewService | None = None
    typed_tools: dict[str, str] = field(default_factory=dict)
    telemetry: Telemetry = NO_TELEMETRY

    def require(self) -> CrewService:
        """The running service.

        Raises:
            ToolError: the server is still starting.
        """
        if self.service is None:
            raise ToolError("crew-mcp is still starting; try again in a moment.")
        return self.service
