"""Who is asking: the owner of the records, the conversation they are filed under, and who decides.

The owner is the authenticated principal when there is one, else ``CREW_MCP_OWNER``, else the local OS
user. The conversation is an explicit ``conversation_id``, else the transport's session (a 2025-era HTTP
session), else ``default``: a filter within the owner's runs, never an identity. Whether a decision comes
from a model, a person or crew-mcp itself is part of the caller too, because the ``human`` approval policy
depends on it. With authentication on, the caller also carries what the deployment lets it do (crews,
approvals), computed once at the boundary from the principal and the ``[auth]`` configuration.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, replace
from typing import Literal

from .auth.config import AuthConfig, Principal, allowed_crews, is_approver

__all__ = ["DEFAULT_CONVERSATION", "Caller", "Decider", "default_owner"]

DEFAULT_CONVERSATION = "default"
Decider = Literal["model", "human", "system"]


@dataclass(frozen=True)
class Caller:
    """Who is asking: the record owner, the conversation, and whether a model, a human or crew-mcp decides.

    ``via`` says through what the request came (``tool``, ``elicitation``, ``cli``, ``expiry``, ...).
    ``crews`` are the crews it may see and use (None: every crew); an ``approver`` may read and decide on anyone's
    run while it waits for review; ``decides_own`` says whether it may decide on its own runs.
    """

    owner: str
    conversation_id: str = DEFAULT_CONVERSATION
    by: Decider = "model"
    via: str = "tool"
    crews: frozenset[str] | None = None
    approver: bool = False
    decides_own: bool = True

    @classmethod
    def for_principal(
        cls,
        principal: Principal,
        config: AuthConfig,
        *,
        conversation_id: str = DEFAULT_CONVERSATION,
        by: Decider = "model",
        via: str = "tool",
    ) -> Caller:
        """The caller an authenticated ``principal`` is: its id as the owner, with the crews and approval rights the
        ``[auth]`` configuration gives it (the MCP boundary and the inbox both make theirs here)."""
        return cls(
            owner=principal.id,
            conversation_id=conversation_id,
            by=by,
            via=via,
            crews=allowed_crews(principal, config),
            approver=is_approver(principal, config),
            decides_own=config.approval.owner,
        )

    def may_decide(self, record_owner: str) -> bool:
        """Whether this caller may approve or reject a run owned by ``record_owner``."""
        return (self.decides_own and record_owner == self.owner) or self.approver

    def may_use(self, crew: str) -> bool:
        """Whether this caller may see and use ``crew``."""
        return self.crews is None or crew in self.crews

    def deciding(self, by: Decider, via: str) -> Caller:
        """The same caller, with the decision attributed to ``by`` through ``via``."""
        return replace(self, by=by, via=via)


def default_owner(configured: str | None) -> str:
    """The owner of records made without an authenticated principal: ``configured`` (CREW_MCP_OWNER) or the OS user."""
    return configured or local_owner()


def local_owner() -> str:
    """The local OS user as an owner (``local:<user>``)."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "local:user"
