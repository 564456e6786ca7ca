"""Per-principal limits with an injected clock: kickoffs per minute as a token bucket that says when to retry,
and concurrent waits as slots."""

from __future__ import annotations

import pytest

from crew_mcp.auth import Decision, Limiter
from crew_mcp.auth.config import LimitsConfig


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **config: float | int | None) -> Limiter:
    return Limiter(LimitsConfig.model_validate(config), clock=clock)


def test_a_burst_up_to_the_rate_then_refusals_that_say_when_to_retry() -> None:
    clock = Clock()
    limits = limiter(clock, kickoffs_per_minute=6)
    assert all(limits.kickoff("alice").allowed for _ in range(6))
    refused = limits.kickoff("alice")
    assert not refused.allowed and refused.retry_after == pytest.approx(10.0)
    assert refused.retry_after_header == "10"
    clock.now += 4
    again = limits.kickoff("alice")
    assert not again.allowed and again.retry_after == pytest.approx(6.0)
    clock.now += 6
    assert limits.kickoff("alice").allowed
    assert not limits.kickoff("alice").allowed


def test_principals_have_their_own_buckets() -> None:
    clock = Clock()
    limits = limiter(clock, kickoffs_per_minute=1)
    assert limits.kickoff("alice").allowed
    assert not limits.kickoff("alice").allowed
    assert limits.kickoff("bob").allowed


def test_an_idle_bucket_refills_only_to_the_burst() -> None:
    clock = Clock()
    limits = limiter(clock, kickoffs_per_minute=2)
    clock.now += 3600
    assert [limits.kickoff("alice").allowed for _ in range(3)] == [True, True, False]


def test_limits_can_be_switched_off() -> None:
    limits = limiter(Clock(), kickoffs_per_minute=None, concurrent_waits=None)
    assert all(limits.kickoff("alice").allowed for _ in range(1000))
    assert all(limits.acquire_wait("alice").allowed for _ in range(1000))


def test_concurrent_waits_are_slots_given_back_on_release() -> None:
    limits = limiter(Clock(), concurrent_waits=2)
    assert limits.acquire_wait("alice").allowed and limits.acquire_wait("alice").allowed
    refused = limits.acquire_wait("alice")
    assert refused == Decision(False) and refused.retry_after_header is None
    assert limits.acquire_wait("bob").allowed
    limits.release_wait("alice")
    assert limits.waits("alice") == 1
    assert limits.acquire_wait("alice").allowed
    for _ in range(5):
        limits.release_wait("alice")  # extra releases never make a negative count
    assert limits.waits("alice") == 0


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert Decision(False, 0.2).retry_after_header == "1"
    assert Decision(False, 2.01).retry_after_header == "3"


def test_many_principals_do_not_grow_memory_without_bound() -> None:
    clock = Clock()
    limits = limiter(clock, kickoffs_per_minute=60)
    for i in range(10_001):
        limits.kickoff(f"user-{i}")
    clock.now += 60
    limits.kickoff("late")
    assert len(limits._buckets) <= 2
