"""One contract for every ledger backend: memory, SQLite and a real Redis run the same tests."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from crew_mcp.clock import ManualClock
from crew_mcp.errors import LedgerError
from crew_mcp.ledger import (
    Decision,
    Ledger,
    RecordState,
    RunRecord,
    Stop,
    default_ledger_url,
    open_ledger,
    pause_key,
    run_retention,
    sqlite_path,
)
from crew_mcp.ledger.memory import MemoryLedger
from crew_mcp.models import (
    ExecutionState,
    ExecutionStatus,
    FinalOutput,
    PendingHumanInput,
    Progress,
    TaskOutput,
    Usage,
    WebhookUrls,
)

OpenLedger = Callable[[], Awaitable[Ledger]]
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def open_handle(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenLedger]:
    """Opens handles on one store (for memory: the same object); all are closed at teardown."""
    url = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path}/ledger.db",
        "redis": request.getfixturevalue("ledger_redis_url") if request.param == "redis" else "",
    }[request.param]
    shared = open_ledger(url) if request.param == "memory" else None
    handles: list[Ledger] = []

    async def open_one() -> Ledger:
        handle = shared or open_ledger(url)
        handles.append(handle)
        return handle

    yield open_one
    for handle in handles:
        await handle.aclose()


@pytest.fixture
async def ledger(open_handle: OpenLedger) -> Ledger:
    return await open_handle()


def rec(n: int, *, owner: str = "alice", conversation: str = "conv-1", crew: str = "trip", **kw: object) -> RunRecord:
    """Record ``n``, created ``n`` minutes after T0 (so a higher n is newer)."""
    at = T0 + timedelta(minutes=n)
    fields: dict[str, object] = {
        "request_id": f"req-{n}",
        "crew": crew,
        "conversation_id": conversation,
        "owner": owner,
        "inputs": {"city": "Lisbon"},
        "input_names": ["city"],
        "created_at": at,
        "updated_at": at,
    }
    fields.update(kw)
    return RunRecord.model_validate(fields)


async def started(ledger: Ledger, n: int, **kw: Any) -> RunRecord:
    await ledger.create(rec(n, **kw))
    return await ledger.confirm(f"req-{n}", f"k-{n}")


def status(n: int, state: ExecutionState, task: str | None = None) -> ExecutionStatus:
    pending = PendingHumanInput(task_id=task, output="draft") if task else None
    return ExecutionStatus(kickoff_id=f"k-{n}", state=state, pending=pending, raw={"state": state.value})


def decision(task: str = "review", approve: bool = True) -> Decision:
    return Decision(task_id=task, approve=approve, feedback="looks good", by="human", via="tool", actor="alice")


def ids(records: list[RunRecord]) -> list[str]:
    return [r.request_id for r in records]


# ----------------------------------------------------------------------------------- kickoff lifecycle


async def test_a_record_is_found_by_its_request_id_before_and_after_its_kickoff_id(ledger: Ledger) -> None:
    # Webhook URLs carry the request id: the receiver checks their secret before it reads a body.
    await ledger.create(rec(1, webhook_secret="s3cret"))
    before = await ledger.get_request("req-1", owner=None)
    await ledger.confirm("req-1", "k-1")
    after = await ledger.get_request("req-1", owner=None)
    assert before is not None and before.kickoff_id is None and before.webhook_secret == "s3cret"
    assert after is not None and after.kickoff_id == "k-1"
    assert await ledger.get_request("req-2", owner=None) is None


async def test_create_leaves_a_visible_unconfirmed_record(ledger: Ledger) -> None:
    await ledger.create(rec(1))

    [found] = await ledger.list(owner="alice")
    assert found.state is RecordState.UNCONFIRMED
    assert found.kickoff_id is None
    assert found == rec(1)


async def test_confirm_sets_kickoff_id_and_running(ledger: Ledger) -> None:
    await ledger.create(rec(1))

    confirmed = await ledger.confirm("req-1", "k-1")

    assert (confirmed.kickoff_id, confirmed.state) == ("k-1", RecordState.RUNNING)
    assert confirmed.updated_at > rec(1).updated_at
    assert await ledger.get("k-1", owner="alice") == confirmed
    assert await ledger.list(owner="alice", state="unconfirmed") == []


async def test_confirm_again_with_the_same_kickoff_id_changes_nothing(ledger: Ledger) -> None:
    first = await started(ledger, 1)

    assert await ledger.confirm("req-1", "k-1") == first
    with pytest.raises(LedgerError, match="already confirmed"):
        await ledger.confirm("req-1", "k-other")


async def test_confirm_of_an_unknown_request_id_raises(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="req-404"):
        await ledger.confirm("req-404", "k-1")


async def test_a_kickoff_id_belongs_to_one_record_only(ledger: Ledger) -> None:
    await started(ledger, 1)
    await ledger.create(rec(2))

    with pytest.raises(LedgerError, match="kickoff id"):
        await ledger.confirm("req-2", "k-1")
    with pytest.raises(LedgerError, match="kickoff id"):
        await ledger.create(rec(3, kickoff_id="k-1"))
    assert (await ledger.get("k-1", owner=None)).request_id == "req-1"  # type: ignore[union-attr]
    assert ids(await ledger.list(owner="alice")) == ["req-2", "req-1"]


async def test_duplicate_create_raises_and_never_overwrites(ledger: Ledger) -> None:
    await ledger.create(rec(1))

    with pytest.raises(LedgerError, match="already exists"):
        await ledger.create(rec(1, owner="mallory", crew="other"))

    assert await ledger.list(owner="mallory") == []
    assert await ledger.list(owner="alice") == [rec(1)]


async def test_mark_failed_sets_kickoff_failed_and_the_error(ledger: Ledger) -> None:
    await ledger.create(rec(1))

    await ledger.mark_failed("req-1", "HTTP 422: missing inputs budget")

    [failed] = await ledger.list(owner="alice")
    assert (failed.state, failed.error) == (RecordState.KICKOFF_FAILED, "HTTP 422: missing inputs budget")
    with pytest.raises(LedgerError, match="req-404"):
        await ledger.mark_failed("req-404", "boom")


async def test_mark_failed_may_have_started_keeps_the_record_in_its_own_state(ledger: Ledger) -> None:
    await ledger.create(rec(1))

    await ledger.mark_failed("req-1", "answer unreadable", may_have_started=True)

    [maybe] = await ledger.list(owner="alice", state="may_have_started")
    assert (maybe.request_id, maybe.state, maybe.error) == ("req-1", RecordState.MAY_HAVE_STARTED, "answer unreadable")
    assert await ledger.list(owner="alice", state="kickoff_failed") == []
    confirmed = await ledger.confirm("req-1", "k-1")  # the run turned up after all (a webhook named it)
    assert (confirmed.state, confirmed.kickoff_id) == (RecordState.RUNNING, "k-1")


async def test_mark_failed_never_touches_a_record_already_confirmed(ledger: Ledger) -> None:
    confirmed = await started(ledger, 1)

    await ledger.mark_failed("req-1", "late 502")

    assert await ledger.get("k-1", owner="alice") == confirmed


async def test_get_request_finds_a_record_with_or_without_kickoff_id_for_its_owner_only(ledger: Ledger) -> None:
    await ledger.create(rec(1))
    confirmed = await started(ledger, 2)

    assert await ledger.get_request("req-1", owner="alice") == rec(1)
    assert await ledger.get_request("req-2", owner="alice") == confirmed
    assert await ledger.get_request("req-2", owner=None) == confirmed
    assert await ledger.get_request("req-1", owner="bob") is None
    assert await ledger.get_request("req-404", owner=None) is None


# ---------------------------------------------------------------------------------------- visibility


async def test_a_record_is_visible_only_to_its_owner(ledger: Ledger) -> None:
    mine = await started(ledger, 1, owner="alice")

    assert await ledger.get("k-1", owner="alice") == mine
    assert await ledger.get("k-1", owner="bob") is None
    assert await ledger.get("k-1", owner=None) == mine
    assert await ledger.list(owner="bob") == []
    assert await ledger.latest(owner="bob", conversation_id="conv-1") is None


async def test_operations_on_an_unknown_kickoff_id_return_none(ledger: Ledger) -> None:
    assert await ledger.get("k-404", owner=None) is None
    assert await ledger.save_status("k-404", status(404, ExecutionState.RUNNING)) is None
    assert await ledger.set_pending("k-404", PendingHumanInput(task_id="t")) is None
    assert await ledger.add_decision("k-404", decision()) is None


# ---------------------------------------------------------------------------------------- run updates


async def test_save_status_updates_status_state_and_fetch_time(ledger: Ledger) -> None:
    before = await started(ledger, 1)
    done = status(1, ExecutionState.COMPLETED)

    saved = await ledger.save_status("k-1", done)

    assert saved is not None
    assert (saved.status, saved.state, saved.pending) == (done, RecordState.COMPLETED, None)
    assert saved.status_fetched_at is not None
    assert saved.status_fetched_at.tzinfo is not None
    assert saved.updated_at >= before.updated_at
    assert await ledger.get("k-1", owner="alice") == saved


async def test_save_status_tracks_pending_while_waiting_and_clears_it_when_the_run_moves_on(ledger: Ledger) -> None:
    await started(ledger, 1)

    waiting = await ledger.save_status("k-1", status(1, ExecutionState.WAITING_FOR_HUMAN, task="review"))
    again = await ledger.save_status("k-1", status(1, ExecutionState.WAITING_FOR_HUMAN, task="review"))
    moved_on = await ledger.save_status("k-1", status(1, ExecutionState.RUNNING))

    assert waiting is not None
    assert waiting.pending is not None
    assert (waiting.state, waiting.pending.task_id) == (RecordState.WAITING_FOR_HUMAN, "review")
    assert waiting.pending.since is not None
    assert again is not None
    assert again.pending is not None
    assert again.pending.since == waiting.pending.since
    assert moved_on is not None
    assert (moved_on.state, moved_on.pending) == (RecordState.RUNNING, None)


async def test_a_status_that_brings_less_never_erases_progress_output_or_usage(ledger: Ledger) -> None:
    await started(ledger, 1)
    polled = ExecutionStatus(
        kickoff_id="k-1",
        state=ExecutionState.RUNNING,
        progress=Progress(completed=1, total=2, current_task="write", current_agent="Writer"),
        usage=Usage(total_tokens=120),
    )
    webhook = ExecutionStatus(
        kickoff_id="k-1",
        state=ExecutionState.COMPLETED,
        output=FinalOutput(text="done", tasks=[TaskOutput(output="a")]),
    )
    late_poll = ExecutionStatus(
        kickoff_id="k-1", state=ExecutionState.COMPLETED, progress=Progress(completed=0), output=FinalOutput()
    )

    await ledger.save_status("k-1", polled)
    done = await ledger.save_status("k-1", webhook)
    again = await ledger.save_status("k-1", late_poll)
    stale = await ledger.save_status("k-1", status(1, ExecutionState.RUNNING))

    assert done is not None and done.status is not None
    assert done.status.progress == Progress(completed=2, total=2, current_task="write", current_agent="Writer")
    assert (done.status.usage, done.status.output) == (Usage(total_tokens=120), webhook.output)
    assert again is not None and again.status is not None
    assert (again.status.progress.completed, again.status.output) == (2, webhook.output)
    assert stale is not None and stale.status is not None
    assert (stale.state, stale.status.state) == (RecordState.COMPLETED, ExecutionState.COMPLETED)


async def test_set_pending_marks_the_run_waiting_and_none_clears_it(ledger: Ledger) -> None:
    await started(ledger, 1)

    waiting = await ledger.set_pending("k-1", PendingHumanInput(task_id="review", output="draft"))
    cleared = await ledger.set_pending("k-1", None)

    assert waiting is not None
    assert waiting.pending is not None
    assert (waiting.state, waiting.pending.task_id) == (RecordState.WAITING_FOR_HUMAN, "review")
    assert cleared is not None
    assert cleared.pending is None


async def test_add_decision_appends_to_the_history_and_clears_pending(ledger: Ledger) -> None:
    await started(ledger, 1)
    await ledger.set_pending("k-1", PendingHumanInput(task_id="review"))

    first = await ledger.add_decision("k-1", decision(approve=False))
    await ledger.set_pending("k-1", PendingHumanInput(task_id="review"))
    second = await ledger.add_decision("k-1", decision(approve=True))

    assert first is not None
    assert second is not None
    assert first.pending is None
    assert first.state is RecordState.RUNNING  # the crew acts on the decision next
    assert [d.outcome for d in second.decisions] == ["applied", "applied"]
    assert [d.approve for d in second.decisions] == [False, True]
    assert second == await ledger.get("k-1", owner="alice")
    assert await ledger.pending_approvals(owner="alice") == []


async def test_a_decision_ends_the_waiting_status_too_so_listings_say_running(ledger: Ledger) -> None:
    await started(ledger, 1)
    await ledger.save_status("k-1", status(1, ExecutionState.WAITING_FOR_HUMAN, task="review"))

    decided = await ledger.add_decision("k-1", decision())

    assert decided is not None and decided.status is not None
    assert (decided.state, decided.status.state, decided.status.pending) == (
        RecordState.RUNNING,
        ExecutionState.RUNNING,
        None,
    )


async def test_a_webhook_pause_survives_a_status_read_that_still_says_running(ledger: Ledger) -> None:
    await started(ledger, 1)
    await ledger.set_pending("k-1", PendingHumanInput(task_id="review", output="draft"))
    after = await ledger.save_status("k-1", status(1, ExecutionState.RUNNING))
    assert after is not None
    assert after.state is RecordState.WAITING_FOR_HUMAN
    assert after.pending is not None and after.pending.task_id == "review"
    assert [r.kickoff_id for r in await ledger.pending_approvals(owner="alice")] == ["k-1"]
    done = await ledger.save_status("k-1", status(1, ExecutionState.COMPLETED))
    assert done is not None and done.pending is None and done.state is RecordState.COMPLETED


async def test_a_system_decision_made_on_approval_expiry_is_stored_as_given(ledger: Ledger) -> None:
    await started(ledger, 1)
    await ledger.set_pending("k-1", PendingHumanInput(task_id="review"))
    auto = Decision(
        task_id="review",
        approve=False,
        feedback="Rejected automatically: no human decision within 60 s",
        by="system",
        via="expiry",
        actor="alice",
    )
    await ledger.add_decision("k-1", auto)
    stored = await ledger.get("k-1", owner="alice")
    assert stored is not None and stored.decisions == [auto] and stored.pending is None


# ------------------------------------------------------------------------------- stops and reviewer notices


async def test_a_stop_is_recorded_and_one_carried_out_cancels_the_run_and_clears_its_pause(ledger: Ledger) -> None:
    await started(ledger, 1)
    await ledger.save_status("k-1", status(1, ExecutionState.RUNNING))
    await ledger.set_pending("k-1", PendingHumanInput(task_id="review"))
    refused = Stop(result="unsupported", detail="HTTP 405", by="model", via="tool", actor="alice", at=T0)
    kept = await ledger.add_stop("k-1", refused, now=T0)
    assert kept is not None and kept.state is RecordState.WAITING_FOR_HUMAN and kept.stops == [refused]

    done = Stop(result="stopped", by="human", via="cli", actor="alice", at=T0 + timedelta(seconds=5))
    stopped = await ledger.add_stop("k-1", done, now=T0 + timedelta(seconds=5))

    assert stopped is not None and stopped == await ledger.get("k-1", owner="alice")
    assert stopped.state is RecordState.CANCELLED and stopped.pending is None
    assert stopped.status is not None and stopped.status.terminal and stopped.status.raw_state == "stopped"
    assert stopped.status.message == "Stopped by alice (human via cli) at 2026-01-05T09:00:05+00:00"
    assert stopped.stops == [refused, done]
    assert await ledger.pending_approvals(owner="alice") == []
    assert await ledger.add_stop("k-404", done) is None


async def test_a_notice_is_claimed_once_per_pause_and_only_while_the_run_waits_in_it(ledger: Ledger) -> None:
    await started(ledger, 1)
    assert not await ledger.claim_notice("k-1", "k-1:review:1")  # not waiting yet
    waiting = await ledger.set_pending("k-1", PendingHumanInput(task_id="review"))
    assert waiting is not None and pause_key(waiting) == "k-1:review:1"

    assert await ledger.claim_notice("k-1", "k-1:review:1")
    assert not await ledger.claim_notice("k-1", "k-1:review:1")
    assert not await ledger.claim_notice("k-1", "k-1:review:2")  # not the pause the run is in

    await ledger.add_decision("k-1", decision(approve=False))
    assert not await ledger.claim_notice("k-1", "k-1:review:1")  # decided: no late notice
    again = await ledger.set_pending("k-1", PendingHumanInput(task_id="review"))
    assert again is not None and pause_key(again) == "k-1:review:2"  # the re-run task pauses anew
    assert await ledger.claim_notice("k-1", "k-1:review:2")
    stored = await ledger.get("k-1", owner=None)
    assert stored is not None and stored.notified == ["k-1:review:1", "k-1:review:2"]
    assert not await ledger.claim_notice("k-404", "k-404:review:1")


async def test_concurrent_claims_of_one_pause_from_two_handles_grant_exactly_one(open_handle: OpenLedger) -> None:
    one, two = await open_handle(), await open_handle()
    await started(one, 1)
    await one.set_pending("k-1", PendingHumanInput(task_id="review"))
    granted: list[bool] = []

    async def claim(handle: Ledger) -> None:
        granted.append(await handle.claim_notice("k-1", "k-1:review:1"))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(claim, (one, two)[i % 2])

    assert sorted(granted) == [False] * 19 + [True]


# ------------------------------------------------------------------------------------------- listings


async def test_list_is_newest_first_and_filters_by_conversation_crew_state_and_limit(ledger: Ledger) -> None:
    await started(ledger, 1, conversation="a", crew="trip")
    await started(ledger, 2, conversation="b", crew="research")
    await started(ledger, 3, conversation="a", crew="research")
    await ledger.create(rec(4, conversation="a", crew="trip"))
    await started(ledger, 5, owner="bob", conversation="a")
    await ledger.save_status("k-1", status(1, ExecutionState.COMPLETED))

    assert ids(await ledger.list(owner="alice")) == ["req-4", "req-3", "req-2", "req-1"]
    assert ids(await ledger.list(owner="alice", conversation_id="a")) == ["req-4", "req-3", "req-1"]
    assert ids(await ledger.list(owner="alice", crew="research")) == ["req-3", "req-2"]
    assert ids(await ledger.list(owner="alice", state="running")) == ["req-3", "req-2"]
    assert ids(await ledger.list(owner="alice", state=RecordState.COMPLETED)) == ["req-1"]
    assert ids(await ledger.list(owner="alice", conversation_id="a", crew="trip", state="unconfirmed")) == ["req-4"]
    assert ids(await ledger.list(owner="alice", limit=2)) == ["req-4", "req-3"]
    assert await ledger.list(owner="alice", limit=0) == []
    assert ids(await ledger.list(owner="bob")) == ["req-5"]


async def test_a_state_change_moves_the_record_between_state_listings(ledger: Ledger) -> None:
    await started(ledger, 1)

    await ledger.save_status("k-1", status(1, ExecutionState.FAILED))

    assert await ledger.list(owner="alice", state="running") == []
    assert ids(await ledger.list(owner="alice", state="failed")) == ["req-1"]


async def test_latest_is_the_newest_record_of_the_conversation(ledger: Ledger) -> None:
    await started(ledger, 1, conversation="a")
    await started(ledger, 2, conversation="a")
    await started(ledger, 3, conversation="b")

    latest = await ledger.latest(owner="alice", conversation_id="a")

    assert latest is not None
    assert latest.request_id == "req-2"
    assert await ledger.latest(owner="alice", conversation_id="none") is None


async def test_pending_approvals_lists_waiting_runs_newest_first(ledger: Ledger) -> None:
    for n in (1, 2, 3):
        await started(ledger, n)
    await started(ledger, 4, owner="bob")
    await ledger.save_status("k-1", status(1, ExecutionState.WAITING_FOR_HUMAN, task="review"))
    await ledger.set_pending("k-3", PendingHumanInput(task_id="edit"))
    await ledger.set_pending("k-4", PendingHumanInput(task_id="edit"))

    pending = await ledger.pending_approvals(owner="alice")

    assert ids(pending) == ["req-3", "req-1"]
    assert [r.pending.task_id for r in pending if r.pending] == ["edit", "review"]


async def test_every_owners_pending_approvals_are_listed_for_approvers(ledger: Ledger) -> None:
    for n, owner in ((1, "alice"), (2, "bob"), (3, "carol")):
        await started(ledger, n, owner=owner)
    await ledger.set_pending("k-1", PendingHumanInput(task_id="edit"))
    await ledger.set_pending("k-2", PendingHumanInput(task_id="edit"))
    await ledger.add_decision(
        "k-1", Decision(task_id="edit", approve=True, feedback="", by="human", via="tool", actor="carol")
    )

    everyone = await ledger.pending_approvals(owner=None)
    waiting = await ledger.list(owner=None, state=RecordState.WAITING_FOR_HUMAN.value)

    assert ids(everyone) == ["req-2"] and ids(waiting) == ["req-2"]  # a decision moves a run out of the index
    assert ids(await ledger.list(owner=None)) == ["req-3", "req-2", "req-1"]
    assert await ledger.pending_approvals(owner="alice") == []


async def test_pending_count_counts_the_waiting_runs_of_every_owner(ledger: Ledger) -> None:
    assert await ledger.pending_count() == 0
    for n in (1, 2, 3):
        await started(ledger, n)
    await started(ledger, 4, owner="bob")
    await ledger.save_status("k-1", status(1, ExecutionState.WAITING_FOR_HUMAN, task="review"))
    await ledger.set_pending("k-3", PendingHumanInput(task_id="edit"))
    await ledger.set_pending("k-4", PendingHumanInput(task_id="edit"))
    assert await ledger.pending_count() == 3

    await ledger.add_decision("k-3", decision("edit"))

    assert await ledger.pending_count() == 2


async def test_ping_answers_while_the_ledger_is_open_and_fails_once_closed(ledger: Ledger) -> None:
    await ledger.ping()
    await started(ledger, 1)
    await ledger.ping()

    await ledger.aclose()

    with pytest.raises(LedgerError):
        await ledger.ping()


# -------------------------------------------------------------------------------------------- pruning


async def test_prune_deletes_records_older_than_max_age(ledger: Ledger) -> None:
    now = datetime.now(UTC)
    await ledger.create(rec(1, created_at=now - timedelta(days=40), updated_at=now - timedelta(days=40)))
    await ledger.create(rec(2, kickoff_id="k-2", created_at=now - timedelta(days=40), updated_at=now))
    await ledger.create(rec(3, created_at=now - timedelta(days=1), updated_at=now - timedelta(days=1)))

    removed = await ledger.prune(max_age=timedelta(days=30), max_count=100)

    assert removed == 1
    assert ids(await ledger.list(owner="alice")) == ["req-3", "req-2"]


async def test_prune_keeps_only_the_newest_max_count_and_forgets_their_kickoff_ids(ledger: Ledger) -> None:
    for n in range(1, 6):
        await started(
            ledger, n, conversation="a" if n % 2 else "b", created_at=datetime.now(UTC) + timedelta(seconds=n)
        )

    removed = await ledger.prune(max_age=timedelta(days=365), max_count=2)

    assert removed == 3
    assert ids(await ledger.list(owner="alice")) == ["req-5", "req-4"]
    assert ids(await ledger.list(owner="alice", conversation_id="a")) == ["req-5"]
    assert ids(await ledger.list(owner="alice", state="running")) == ["req-5", "req-4"]
    assert await ledger.get("k-1", owner=None) is None
    assert await ledger.save_status("k-1", status(1, ExecutionState.COMPLETED)) is None
    assert await ledger.prune(max_age=timedelta(days=365), max_count=2) == 0


async def test_prune_refuses_negative_limits(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="max_count"):
        await ledger.prune(max_age=timedelta(days=1), max_count=-1)


# ------------------------------------------------------------------------------------ storage fidelity


async def test_datetimes_are_timezone_aware_utc(ledger: Ledger) -> None:
    lisbon_summer = timezone(timedelta(hours=1))
    local = datetime(2026, 7, 1, 12, 0, tzinfo=lisbon_summer)
    await ledger.create(rec(1, created_at=local, updated_at=local))
    await ledger.confirm("req-1", "k-1")

    stored = await ledger.get("k-1", owner=None)

    assert stored is not None
    assert stored.created_at == local
    assert stored.created_at.utcoffset() == timedelta(0)
    assert stored.updated_at.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError):
        rec(2, created_at=datetime(2026, 1, 1, 12, 0))


async def test_a_full_record_round_trips_exactly(ledger: Ledger) -> None:
    full = rec(
        1,
        kickoff_id="k-1",
        meta={"crew_mcp_request_id": "req-1", "nested": {"a": [1, 2.5, None, True]}},
        webhooks=WebhookUrls(task="https://h/task", crew="https://h/crew"),
        webhook_secret="s3cr3t",
        state=RecordState.WAITING_FOR_HUMAN,
        status=ExecutionStatus(
            kickoff_id="k-1",
            state=ExecutionState.WAITING_FOR_HUMAN,
            raw_state="PAUSED",
            message="waiting",
            progress=Progress(completed=1, total=3, current_task="review", current_agent="editor"),
            output=FinalOutput(text="draft", json_value={"x": 1}, tasks=[TaskOutput(task_id="t1", output="o")]),
            usage=Usage(total_tokens=12, prompt_tokens=7, completion_tokens=5),
            execution_time=1.25,
            pending=PendingHumanInput(task_id="review", output="draft", since=T0),
            raw={"state": "PAUSED", "ünïcode": "✓"},
        ),
        status_fetched_at=T0 + timedelta(microseconds=123_456),
        pending=PendingHumanInput(task_id="review", output="draft", since=T0),
        decisions=[decision(approve=False)],
        error=None,
    )

    await ledger.create(full)

    assert await ledger.get("k-1", owner="alice") == full
    assert (await ledger.list(owner="alice"))[0].model_dump_json() == full.model_dump_json()


async def test_concurrent_updates_from_two_handles_lose_no_write(open_handle: OpenLedger) -> None:
    one, two = await open_handle(), await open_handle()
    await started(one, 1)

    async def decide(handle: Ledger, who: str) -> None:
        for i in range(25):
            await handle.add_decision("k-1", decision(task=f"{who}-{i}"))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for handle, who in ((one, "one"), (two, "two"), (one, "one-b"), (two, "two-b")):
                tg.start_soon(decide, handle, who)

    final = await two.get("k-1", owner=None)
    assert final is not None
    assert len(final.decisions) == 100
    assert len({d.task_id for d in final.decisions}) == 100


async def test_records_survive_reopening(open_handle: OpenLedger, request: pytest.FixtureRequest) -> None:
    first = await open_handle()
    if isinstance(first, MemoryLedger):
        pytest.skip("the memory ledger lives only as long as its object")
    saved = await started(first, 1)
    await first.aclose()

    reopened = await open_handle()

    assert await reopened.get("k-1", owner="alice") == saved


async def test_a_closed_ledger_raises_ledger_error(ledger: Ledger) -> None:
    await ledger.aclose()

    with pytest.raises(LedgerError):
        await ledger.list(owner="alice")


# ------------------------------------------------------------------------------- backend-independent


def test_record_states_cover_every_execution_state() -> None:
    assert {s.value for s in ExecutionState} <= {s.value for s in RecordState}
    assert {"unconfirmed", "kickoff_failed"} <= {s.value for s in RecordState}


def test_open_ledger_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    from crew_mcp.ledger.redis import RedisLedger
    from crew_mcp.ledger.sqlite import SqliteLedger

    assert isinstance(open_ledger("memory://"), MemoryLedger)
    sqlite = open_ledger(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(sqlite, SqliteLedger)
    assert sqlite.path == tmp_path / "x.db"
    assert isinstance(open_ledger("redis://127.0.0.1:6379/0?prefix=t:"), RedisLedger)
    assert all(isinstance(x, Ledger) for x in (MemoryLedger(), sqlite, open_ledger("redis://127.0.0.1:6379/0")))
    with pytest.raises(LedgerError, match="Unsupported ledger URL postgres://…"):
        open_ledger("postgres://user:pw@db/x")


def test_sqlite_urls_accept_absolute_home_and_relative_paths() -> None:
    assert sqlite_path("sqlite:///abs/path.db") == Path("/abs/path.db")
    assert sqlite_path("sqlite:////abs/path.db") == Path("/abs/path.db")
    assert sqlite_path("sqlite:///~/x.db") == Path.home() / "x.db"
    assert sqlite_path("sqlite:///./rel/x.db") == Path("rel/x.db")
    assert sqlite_path("sqlite://rel.db") == Path("rel.db")
    assert sqlite_path("sqlite:rel.db") == Path("rel.db")
    with pytest.raises(LedgerError, match="names no file"):
        sqlite_path("sqlite:///")


def test_the_default_ledger_is_a_sqlite_file_in_the_user_data_dir() -> None:
    import platformdirs

    url = default_ledger_url()

    assert url.startswith("sqlite:///")
    assert sqlite_path(url) == Path(platformdirs.user_data_dir("crew-mcp")) / "ledger.db"


def test_importing_crew_mcp_and_its_ledger_never_imports_redis() -> None:
    code = "import sys, crew_mcp, crew_mcp.ledger.memory, crew_mcp.ledger.sqlite; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=20)
    assert out.stdout.strip() == "False"


async def test_retention_prunes_in_the_background_and_logs_failures(caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger()
    old = datetime.now(UTC) - timedelta(days=90)
    await ledger.create(rec(1, created_at=old, updated_at=old))
    calls = 0
    third_call = anyio.Event()

    clock = ManualClock()

    class Flaky(MemoryLedger):
        async def prune(self, *, max_age: timedelta, max_count: int, now: datetime | None = None) -> int:
            nonlocal calls
            calls += 1
            if calls == 3:
                third_call.set()
            if calls == 1:
                raise LedgerError("database is locked")
            assert now == clock.now()  # the retention clock, not the machine's
            return await ledger.prune(max_age=max_age, max_count=max_count, now=now)

    with caplog.at_level(logging.INFO, logger="crew_mcp.ledger"), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_retention(Flaky(), clock, interval=60, max_age=timedelta(days=30), max_count=10))
            while not third_call.is_set():
                await clock.advance(60)
            tg.cancel_scope.cancel()

    assert await ledger.list(owner="alice") == []
    assert "Ledger retention failed" in caplog.text
    assert "removed 1 run record" in caplog.text
