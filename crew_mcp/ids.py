"""Identifiers crew-mcp exchanges with AMP: the kickoff_id a crew answers with, and crew-mcp's own request id.

A kickoff_id goes into URL paths (``/status/{kickoff_id}``), so it is checked before any request and before it
is stored: 1-128 characters of ``A-Za-z0-9_.:-``, not starting with a punctuation mark, never ``.`` or ``..``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidInputError

__all__ = ["REQUEST_ID_META_KEY", "KickoffResult", "is_kickoff_id", "validate_kickoff_id", "webhook_path"]

REQUEST_ID_META_KEY = "crew_mcp_request_id"
"""The ``meta`` key a kickoff carries crew-mcp's request id under (AMP echoes ``meta`` in every webhook)."""
_KICKOFF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class KickoffResult(NamedTuple):
    """What a kickoff returns: AMP's ``kickoff_id`` and the client request id sent in ``meta``."""

    kickoff_id: str
    request_id: str


def validate_kickoff_id(kickoff_id: str) -> str:
    """Return ``kickoff_id`` unchanged when it is safe to put in a URL path.

    Raises:
        InvalidInputError: it is empty, too long, ``.``/``..``, or has characters outside ``A-Za-z0-9_.:-``.
    """
    if not is_kickoff_id(kickoff_id):
        shown = repr(kickoff_id)[:60]
        raise InvalidInputError(
            f"{shown} is not a valid kickoff_id: use the id returned by kickoff "
            "(1-128 characters: letters, digits, '_', '.', ':', '-')."
        )
    return kickoff_id


def is_kickoff_id(kickoff_id: object) -> bool:
    """True when ``kickoff_id`` is a string safe to put in a URL path (see :func:`validate_kickoff_id`)."""
    return isinstance(kickoff_id, str) and kickoff_id not in {".", ".."} and bool(_KICKOFF_ID_RE.fullmatch(kickoff_id))


def webhook_path(request_id: str, secret: str, kind: str = "") -> str:
    """The path of a run's webhook URL for ``kind`` (``task``, ``step``, ``crew``), or its base without a kind.

    The request id names the ledger record and the per-execution secret authenticates the caller, both checked
    before any body is read (see :mod:`crew_mcp.webhooks`).
    """
    base = f"/webhooks/{request_id}/{secret}"
    return f"{base}/{kind}" if kind else base
