"""``crew-mcp doctor``: check the configuration, the ledger, and each crew's token, health and inputs.

Token problems are reported by kind (missing, rejected, not allowed); a token is never printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from . import errors as e
from .identity import default_owner
from .service import CrewService

__all__ = ["Check", "Report", "run_doctor"]


@dataclass
class Check:
    """One line of the report: what was checked, whether it passed, and what was found."""

    subject: str
    ok: bool
    detail: str


@dataclass
class Report:
    """Every check, in order; ``ok`` when all passed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, subject: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(subject, ok, detail))

    def text(self) -> str:
        lines = [f"{'ok ' if c.ok else 'FAIL'} {c.subject}: {c.detail}" for c in self.checks]
        lines.append("All checks passed." if self.ok else "Some checks failed; see FAIL lines above.")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


async def run_doctor(service: CrewService) -> Report:
    """Run every check; never raises for a crew or ledger problem (each becomes a failed check)."""
    report = Report()
    settings = service.settings
    source = settings.config_path or ("the environment" if settings.crews else "the built-in simulator (no crew set)")
    report.add("configuration", True, f"{len(service.registry.crews)} crew(s) from {source}")
    try:
        await service.ledger.list(owner=default_owner(settings.owner), limit=1)
        report.add("ledger", True, "readable")
    except e.LedgerError as exc:
        report.add("ledger", False, str(exc))
    for crew in service.registry.crews.values():
        conf = crew.config
        subject = f"crew {conf.name}"
        if conf.token is None and not conf.simulated:
            report.add(subject, False, "no token configured (set token_env in the config or CREW_MCP_CREW_TOKEN)")
            continue
        try:
            health = await crew.client.health()
            names = await crew.client.inputs()
        except e.AuthenticationError:
            report.add(subject, False, "the token was rejected (HTTP 401): it is wrong, expired or for another crew")
            continue
        except e.PermissionDeniedError:
            report.add(subject, False, "the token is not allowed to use this crew (HTTP 403)")
            continue
        except e.CrewAPIError as exc:
            report.add(subject, False, str(e.UpstreamError.from_api(exc, crew=conf.name, action="answer")))
            continue
        report.add(subject, True, f"{health.strip() or 'reachable'}; inputs: {', '.join(names) or '(none)'}")
    return report
