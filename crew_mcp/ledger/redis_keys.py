"""The Redis ledger's key layout: every key under the prefix, the indexes a record belongs to, and how a write
keeps them in step.

```text
run:{request_id}                     the record as JSON
kickoff:{kickoff_id}                 → request_id
idx:created / idx:updated            every request_id, scored by created_at / updated_at (µs)
idx:owner:{owner}                    the owner's request_ids, scored by created_at
idx:conv:{owner}:{conversation_id}   one conversation's, scored by created_at
idx:state:{owner}:{state}            the owner's records in one state, scored by created_at
idx:anystate:{state}                 every owner's records in one state (approvers' listings)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from crew_mcp.ledger.records import RunRecord, micros

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

__all__ = ["INSERT_SCRIPT", "KeySpace", "glob_escape", "redact_url", "split_prefix"]

# ARGV: idx:created, idx:updated, then 10 per record: run key, kickoff key or "", owner, conversation, state and
# any-owner state index keys, request_id, created µs, updated µs, JSON. Checks all before writing: all or nothing.
INSERT_SCRIPT = """
local created, updated = ARGV[1], ARGV[2]
for b = 3, #ARGV, 10 do
  if redis.call('EXISTS', ARGV[b]) == 1 then return redis.error_reply('DUPLICATE request id') end
  if ARGV[b + 1] ~= '' and redis.call('EXISTS', ARGV[b + 1]) == 1 then
    return redis.error_reply('DUPLICATE kickoff id')
  end
end
for b = 3, #ARGV, 10 do
  local rid = ARGV[b + 6]
  redis.call('SET', ARGV[b], ARGV[b + 9])
  if ARGV[b + 1] ~= '' then redis.call('SET', ARGV[b + 1], rid) end
  for i = 2, 5 do redis.call('ZADD', ARGV[b + i], ARGV[b + 7], rid) end
  redis.call('ZADD', created, ARGV[b + 7], rid)
  redis.call('ZADD', updated, ARGV[b + 8], rid)
end
return #ARGV
"""


class KeySpace:
    """The keys of one ledger (``prefix`` first), and the index bookkeeping of a record's writes."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def k(self, kind: str, *parts: str) -> str:
        """A key: ``kind`` then the parts, each percent-encoded so a ``:`` in an owner cannot collide."""
        return self.prefix + kind + ":".join(quote(p, safe="") for p in parts)

    def indexes(self, record: RunRecord) -> tuple[str, str, str, str]:
        """The owner, conversation, state and any-owner state indexes of ``record`` (the last two move with its
        state)."""
        return (
            self.k("idx:owner:", record.owner),
            self.k("idx:conv:", record.owner, record.conversation_id),
            self.k("idx:state:", record.owner, record.state.value),
            self.k("idx:anystate:", record.state.value),
        )

    def write(self, pipe: Pipeline, new: RunRecord, old: RunRecord | None) -> None:
        """Queue the commands that store ``new`` (replacing ``old``) and keep every index in step."""
        rid = new.request_id
        created = micros(new.created_at)
        pipe.set(self.k("run:", rid), new.model_dump_json())
        pipe.zadd(self.k("idx:updated"), {rid: micros(new.updated_at)})
        if new.kickoff_id is not None and (old is None or old.kickoff_id != new.kickoff_id):
            pipe.set(self.k("kickoff:", new.kickoff_id), rid)
        if old is None:
            pipe.zadd(self.k("idx:created"), {rid: created})
            for index in self.indexes(new):
                pipe.zadd(index, {rid: created})
        elif old.state is not new.state:
            for before, after in zip(self.indexes(old)[2:], self.indexes(new)[2:], strict=True):
                pipe.zrem(before, rid)
                pipe.zadd(after, {rid: created})


def redact_url(url: str) -> str:
    """``url`` without its password (and without its query), fit for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def split_prefix(url: str, default: str) -> tuple[str, str]:
    """``url`` without crew-mcp's own ``?prefix=`` parameter (what redis-py may be given), and that key prefix
    (``default`` when the URL names none). Every Redis user in crew-mcp (ledger, fleet, inbox sessions) reads it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), default)
    bare = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "prefix"])))
    return bare, prefix


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
