"""The delivery-policy config objects, `Retry` and `SubscriptionOptions`:
defaults, immutability, and validation at construction (and through
``bus.subscribe``, which builds the options)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, get_args

import pytest

from eventbus import Backpressure, EventBus, Retry
from eventbus.delivery import DEFAULT_MAX_PENDING, SubscriptionOptions
from eventbus.policies import BACKPRESSURE_POLICIES
from tests.policy_events import Tick


def test_retry_defaults() -> None:
    assert Retry() == Retry(attempts=3, backoff=0.1, factor=2.0, max_backoff=30.0, jitter=0.1)


def test_retry_is_frozen() -> None:
    policy = Retry()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 10  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"attempts": 0}, "attempts", id="no-attempts"),
        pytest.param({"attempts": -1}, "attempts", id="negative-attempts"),
        pytest.param({"attempts": 2.5}, "attempts", id="fractional-attempts"),
        pytest.param({"attempts": True}, "attempts", id="bool-attempts"),
        pytest.param({"attempts": math.inf}, "attempts", id="infinite-attempts"),
        pytest.param({"backoff": -0.1}, "backoff", id="negative-backoff"),
        pytest.param({"backoff": math.nan}, "backoff", id="nan-backoff"),
        pytest.param({"backoff": "1"}, "backoff", id="text-backoff"),
        pytest.param({"max_backoff": -1}, "max_backoff", id="negative-cap"),
        pytest.param({"max_backoff": math.inf}, "max_backoff", id="infinite-cap"),
        pytest.param({"factor": 0.5}, "factor", id="shrinking-factor"),
        pytest.param({"factor": math.inf}, "factor", id="infinite-factor"),
        pytest.param({"jitter": -0.1}, "jitter", id="negative-jitter"),
        pytest.param({"jitter": 1.5}, "jitter", id="jitter-above-one"),
        pytest.param({"jitter": False}, "jitter", id="bool-jitter"),
    ],
)
def test_invalid_retry_is_a_value_error_naming_the_field(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Retry(**options)


@pytest.mark.parametrize(
    "policy",
    [
        Retry(attempts=1),
        Retry(backoff=0, max_backoff=0),
        Retry(factor=1, jitter=0),
        Retry(jitter=1),
        Retry(attempts=100, backoff=5, max_backoff=60),
    ],
)
def test_edge_values_of_retry_are_accepted(policy: Retry) -> None:
    assert policy.attempts >= 1


def test_subscription_options_defaults() -> None:
    options = SubscriptionOptions(name="defaults")
    assert (options.retry, options.timeout, options.max_pending, options.backpressure) == (
        None,
        None,
        DEFAULT_MAX_PENDING,
        "block",
    )
    assert (options.concurrency, options.key, options.from_seq, options.durable, options.in_thread) == (
        1,
        None,
        None,
        False,
        False,
    )
    assert options.middleware == ()
    assert DEFAULT_MAX_PENDING == 10_000


def test_subscription_options_are_frozen_and_keep_middleware_as_a_tuple() -> None:
    options = SubscriptionOptions(name="frozen", middleware=[])
    assert options.middleware == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_pending = 5  # type: ignore[misc]


def test_the_backpressure_policies_are_the_four_documented_ones() -> None:
    assert {"block", "drop_oldest", "drop_newest", "spill"} == BACKPRESSURE_POLICIES
    assert set(get_args(Backpressure)) == BACKPRESSURE_POLICIES


INVALID_OPTIONS = [
    pytest.param({"max_pending": 0}, ValueError, "max_pending", id="no-room"),
    pytest.param({"max_pending": -5}, ValueError, "max_pending", id="negative-room"),
    pytest.param({"max_pending": 1.5}, ValueError, "max_pending", id="fractional-room"),
    pytest.param({"max_pending": True}, ValueError, "max_pending", id="bool-room"),
    pytest.param({"backpressure": "drop"}, ValueError, "backpressure", id="unknown-policy"),
    pytest.param({"backpressure": None}, ValueError, "backpressure", id="no-policy"),
    pytest.param({"concurrency": 0}, ValueError, "concurrency", id="no-workers"),
    pytest.param({"concurrency": 2.0}, ValueError, "concurrency", id="fractional-workers"),
    pytest.param({"timeout": 0}, ValueError, "timeout", id="zero-timeout"),
    pytest.param({"timeout": -1}, ValueError, "timeout", id="negative-timeout"),
    pytest.param({"timeout": math.inf}, ValueError, "timeout", id="infinite-timeout"),
    pytest.param({"timeout": math.nan}, ValueError, "timeout", id="nan-timeout"),
    pytest.param({"timeout": True}, ValueError, "timeout", id="bool-timeout"),
    pytest.param({"from_seq": 0}, ValueError, "from_seq", id="seq-zero"),
    pytest.param({"from_seq": -3}, ValueError, "from_seq", id="negative-seq"),
    pytest.param({"retry": 3}, TypeError, "Retry", id="retry-count"),
    pytest.param({"retry": {"attempts": 3}}, TypeError, "Retry", id="retry-dict"),
    pytest.param({"key": "customer"}, TypeError, "key", id="key-not-callable"),
    pytest.param({"where": 42}, TypeError, "where", id="where-neither"),
]


@pytest.mark.parametrize(("options", "error", "message"), INVALID_OPTIONS)
def test_invalid_subscription_options_are_refused_naming_the_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SubscriptionOptions(name="invalid", **options)


@pytest.mark.parametrize(("options", "error", "message"), INVALID_OPTIONS)
def test_subscribe_refuses_invalid_options_and_registers_nothing(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    bus = EventBus()

    def handler(event: Tick) -> None:
        pass

    with pytest.raises(error, match=message):
        bus.subscribe(Tick, handler, name="refused", **options)
    assert "refused" not in bus.subscriptions


@pytest.mark.parametrize("name", ["", None, 7])
def test_a_subscription_needs_a_non_empty_string_name(name: Any) -> None:
    with pytest.raises(ValueError, match="name"):
        SubscriptionOptions(name=name)


def test_valid_options_reach_the_subscription() -> None:
    bus = EventBus()
    policy = Retry(attempts=5, backoff=0.01)

    def handler(event: Tick) -> None:
        pass

    sub = bus.subscribe(
        Tick,
        handler,
        name="configured",
        retry=policy,
        timeout=1.5,
        max_pending=7,
        backpressure="spill",
        concurrency=2,
        in_thread=True,
    )
    assert sub.options == SubscriptionOptions(
        name="configured",
        retry=policy,
        timeout=1.5,
        max_pending=7,
        backpressure="spill",
        concurrency=2,
        in_thread=True,
    )
