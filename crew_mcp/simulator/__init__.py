"""An AMP-compatible simulator of CrewAI crews, for tests, demos and ``crew-mcp simulate``.

Each crew of a :class:`Simulator` is mounted at ``/{crew.name}`` and answers ``GET /inputs``, ``POST /kickoff``,
``GET /status/{kickoff_id}`` and/or ``GET /{kickoff_id}/status``, ``POST /resume``, ``POST /stop/{kickoff_id}``
and ``GET /`` like a deployed AMP crew, including its documented error bodies, its human-in-the-loop pause and
its habit of forgetting webhook URLs on ``/resume``. A control API under ``/_sim/`` (same token) lets
out-of-process tests move the clock, inject faults and read what was received and sent. With a ``state_path``
the runs live in a SQLite file shared by every process that opens it, and keep going between processes.
"""

from __future__ import annotations

from .app import DEFAULT_TOKEN, SERVER_MARK, Simulator
from .durable import SimulatorStateError
from .engine import Execution
from .faults import FaultRequest, Faults, SimulatedDrop
from .serve import check_loopback, run, serve_app, serve_simulator
from .specs import CrewSpec, InputSpec, TaskSpec, builtin_crews, load_crews
from .webhooks import WebhookDelivery

__all__ = [
    "DEFAULT_TOKEN",
    "SERVER_MARK",
    "CrewSpec",
    "Execution",
    "FaultRequest",
    "Faults",
    "InputSpec",
    "SimulatedDrop",
    "Simulator",
    "SimulatorStateError",
    "TaskSpec",
    "WebhookDelivery",
    "builtin_crews",
    "check_loopback",
    "load_crews",
    "run",
    "serve_app",
    "serve_simulator",
]
