"""Bounded history: the retention policy of a store, and how compaction decides what goes.

Every store removes history the same way: a *prefix* of seqs, below a new
``first_seq``, in one atomic step, so the records a store still holds are
always everything from ``first_seq`` to its head. How far a compaction may go
is the smallest of:

- what the policy asks for (`Retention`: the newest ``keep`` seqs, the
  records younger than ``keep_age``; with both, each one is a limit);
- every `Hold`: the lowest durable checkpoint (records at or above it stay),
  the oldest record a dead letter refers to, and the lowest seq a running
  bus still needs (`HistoryNeed`, registered with ``store.hold_history``).

`compaction_bound` computes it; the stores find the numbers. A `MemoryStore`
past its hard bound (``max_records``) is the one exception: it drops its
oldest records whatever holds them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from ..exceptions import HistoryTruncated

__all__ = [
    "CompactResult",
    "CompactionStep",
    "DEFAULT_COMPACT_INTERVAL",
    "DEFAULT_MAX_RECORDS",
    "HistoryNeed",
    "Hold",
    "RETENTION_QUERY_KEYS",
    "Retention",
    "compact_by_hand",
    "compaction_bound",
    "history_truncated",
    "needed_hold",
    "parse_age",
    "policy_target",
]

DEFAULT_MAX_RECORDS = 100_000
"""A `MemoryStore`'s hard bound unless told otherwise: about 80 MiB of small events."""

DEFAULT_COMPACT_INTERVAL = 1.0
"""Seconds between two background compaction steps of a durable store, at most."""

RETENTION_QUERY_KEYS = ("keep", "keep_age", "compact_interval")
"""The store-URL query parameters `Retention.from_query` reads (``?keep=1000000&keep_age=30d``)."""

HistoryNeed = Callable[[], int | None]
"""What a running bus registers with ``store.hold_history``: returns the lowest
seq some running subscription has not finished yet, or ``None`` when none
needs anything from the store."""

_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_age(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` (or ``"1.5h"``) as a `timedelta`.

    Raises `ValueError` naming the text when it is not such an age, or is zero.
    """
    match = _AGE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an age: {text!r}; expected a number and a unit, such as 30d, 12h, 90m, 45s or 2w")
    seconds = float(match[1]) * _AGE_UNITS[match[2].lower()]
    if not seconds > 0:
        raise ValueError(f"an age must be greater than zero, got {text!r}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Retention:
    """How much history a durable store keeps; it compacts the rest away in the background.

    ```python
    SqliteStore("events.db", retention=Retention(keep=1_000_000, keep_age=timedelta(days=30)))
    EventBus(store="sqlite:///events.db?keep=1000000&keep_age=30d")
    ```

    Attributes:
        keep: keep the newest ``keep`` seqs (``None``: no limit by count).
        keep_age: keep records younger than this (``None``: no limit by age).
            With both, each is a limit: a record goes once either says so.
            Ages are judged by ``recorded_at``, oldest first; removal stops
            at the first record young enough.
        compact_interval: seconds between two background compaction steps,
            at most (the store also steps after every few thousand appended
            records, so each step stays small). ``0`` steps on every append.

    Whatever the policy says, a compaction never removes a record at or
    above a durable checkpoint, one a dead letter refers to, or one a running
    subscription still needs.
    """

    keep: int | None = None
    keep_age: timedelta | None = None
    compact_interval: float = DEFAULT_COMPACT_INTERVAL

    def __post_init__(self) -> None:
        keep = self.keep
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise ValueError(f"keep must be an int >= 0 (records to keep) or None, got {keep!r}")
        age = self.keep_age
        if age is not None and (not isinstance(age, timedelta) or age <= timedelta(0)):
            raise ValueError(f"keep_age must be a timedelta greater than zero or None, got {age!r}")
        interval = self.compact_interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not math.isfinite(interval)
            or interval < 0
        ):
            raise ValueError(f"compact_interval must be a number of seconds >= 0, got {interval!r}")

    @classmethod
    def of(cls, value: Retention | int | timedelta | None) -> Retention | None:
        """A policy from what ``retention=`` accepts: a `Retention`, a count, an age, or ``None``."""
        if value is None or isinstance(value, Retention):
            return value
        if isinstance(value, timedelta):
            return cls(keep_age=value)
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(keep=value)
        raise TypeError(
            f"retention must be a Retention, an int (records to keep), a timedelta (age to keep) "
            f"or None, got {type(value).__name__}"
        )

    @classmethod
    def from_query(cls, values: Mapping[str, str]) -> Retention | None:
        """The policy in a store URL's query values (`RETENTION_QUERY_KEYS`), or ``None`` if it has none.

        ``keep`` is a count, ``keep_age`` an age such as ``30d`` (see
        `parse_age`), ``compact_interval`` seconds. Raises `ValueError`
        naming the parameter that is wrong.
        """
        if not any(key in values for key in RETENTION_QUERY_KEYS):
            return None
        keep: int | None = None
        if "keep" in values:
            try:
                keep = int(values["keep"])
            except ValueError:
                raise ValueError(f"keep must be a whole number of records, got {values['keep']!r}") from None
        age: timedelta | None = None
        if "keep_age" in values:
            try:
                age = parse_age(values["keep_age"])
            except ValueError as exc:
                raise ValueError(f"keep_age: {exc}") from None
        interval = DEFAULT_COMPACT_INTERVAL
        if "compact_interval" in values:
            text = values["compact_interval"]
            try:
                interval = float(text)
            except ValueError:
                raise ValueError(f"compact_interval must be a number of seconds, got {text!r}") from None
        return cls(keep=keep, keep_age=age, compact_interval=interval)

    @property
    def limited(self) -> bool:
        """Whether the policy asks for anything to be removed at all."""
        return self.keep is not None or self.keep_age is not None

    def count_target(self, head: int) -> int | None:
        """The lowest seq the count limit keeps when the head is ``head`` (``None``: no count limit)."""
        return None if self.keep is None else head - self.keep + 1

    def age_threshold_ns(self, now_ns: int) -> int | None:
        """``recorded_at`` (ns) below which a record is too old (``None``: no age limit)."""
        if self.keep_age is None:
            return None
        return now_ns - self.keep_age // timedelta(microseconds=1) * 1_000


def policy_target(count_target: int | None, age_target: int | None, first_seq: int) -> int:
    """Where the policy alone would move ``first_seq`` to: the further of its limits."""
    targets = [target for target in (count_target, age_target) if target is not None]
    return max([first_seq, *targets])


@dataclass(frozen=True)
class Hold:
    """Something that keeps ``seq`` and everything after it from being removed.

    Attributes:
        seq: the lowest seq it keeps.
        reason: says what it is, for `CompactResult.held_by`.
    """

    seq: int
    reason: str

    @classmethod
    def checkpoint(cls, name: str, position: int) -> Hold:
        """A durable checkpoint: records at or above its position stay."""
        return cls(position, f"the durable checkpoint {name!r} at seq {position}")

    @classmethod
    def dead_letter(cls, subscription: str, seq: int) -> Hold:
        """The oldest record a dead letter refers to."""
        return cls(seq, f"a dead letter of {subscription!r} on seq {seq}")

    @classmethod
    def running(cls, seq: int) -> Hold:
        """The lowest seq a running subscription has not finished."""
        return cls(seq, f"a running subscription that still needs seq {seq}")


@dataclass(frozen=True)
class CompactResult:
    """What one compaction did.

    Attributes:
        removed: records removed.
        first_seq: the store's first retained seq afterwards.
        held_by: what stopped the compaction short of its policy (a durable
            checkpoint, a dead letter, a running subscription), or ``None``.
    """

    removed: int
    first_seq: int
    held_by: str | None = None


@dataclass(frozen=True)
class CompactionStep:
    """One compaction step: what a store needs to decide how far it goes.

    A store reads its ``first_seq`` and head, looks for the first record
    young enough (`young_threshold_ns`) below `upper`, gathers its holds,
    and `decide` says where the new ``first_seq`` is.

    Attributes:
        policy: what to remove.
        now_ns: the time ages are measured from (``time.time_ns()``).
        needed: what the running bus still needs (see `needed_hold`).
        max_rows: the most seqs this step may remove (``None``: no limit),
            so that one step stays one short transaction.
    """

    policy: Retention
    now_ns: int
    needed: Hold | None = None
    max_rows: int | None = None

    @property
    def young_threshold_ns(self) -> int | None:
        """``recorded_at`` (ns) from which a record is young enough to keep (``None``: no age limit)."""
        return self.policy.age_threshold_ns(self.now_ns)

    def upper(self, first_seq: int, head: int) -> int:
        """The step looks at seqs below this one only."""
        return head + 1 if self.max_rows is None else min(head + 1, first_seq + self.max_rows)

    def decide(
        self, first_seq: int, head: int, first_young: int | None, holds: Iterable[Hold | None]
    ) -> tuple[int, str | None, bool]:
        """The new ``first_seq``, what held it back, and whether ``max_rows`` left more to remove.

        ``first_young`` is the lowest seq in ``[first_seq, upper)`` whose
        ``recorded_at`` is at or above `young_threshold_ns` (``None``: none is).
        """
        upper = self.upper(first_seq, head)
        age_target = None if self.policy.keep_age is None else upper if first_young is None else first_young
        wanted = policy_target(self.policy.count_target(head), age_target, first_seq)
        bound, held_by = compaction_bound(first_seq, min(wanted, upper), [self.needed, *holds])
        more = bound == upper <= head and (wanted > upper or age_target == upper)
        return bound, held_by, more


def compaction_bound(first_seq: int, target: int, holds: Iterable[Hold | None]) -> tuple[int, str | None]:
    """The new ``first_seq`` (never below the current one) and what held it back, if anything.

    ``target`` is where the policy would go (`policy_target`); each hold
    that lies below it stops the compaction at its seq.
    """
    bound, held_by = target, None
    for hold in holds:
        if hold is not None and hold.seq < bound:
            bound, held_by = hold.seq, hold.reason
    if bound <= first_seq:
        return first_seq, held_by if target > first_seq else None
    return bound, held_by


async def compact_by_hand(
    policy: Retention | None,
    first_seq: int,
    needed: HistoryNeed | None,
    max_rows: int,
    step: Callable[[CompactionStep], Awaitable[tuple[CompactResult, bool]]],
) -> CompactResult:
    """A store's ``compact()``: run ``step`` (one short transaction of at most
    ``max_rows`` seqs) until the policy is met or a hold stops it, and add up
    what the steps removed. Without a limiting policy nothing is removed."""
    if policy is None or not policy.limited:
        return CompactResult(removed=0, first_seq=first_seq)
    removed, more = 0, True
    while more:
        result, more = await step(CompactionStep(policy, time.time_ns(), needed_hold(needed), max_rows))
        removed += result.removed
    return CompactResult(removed=removed, first_seq=result.first_seq, held_by=result.held_by)


def needed_hold(needed: HistoryNeed | None) -> Hold | None:
    """The `Hold` of a running bus's `HistoryNeed`, if it needs anything."""
    if needed is None:
        return None
    seq = needed()
    return None if seq is None else Hold.running(seq)


def history_truncated(where: str, requested: int, first_seq: int) -> HistoryTruncated:
    """The `HistoryTruncated` a store raises for a read from ``requested`` below ``first_seq``."""
    return HistoryTruncated(
        f"{where}: seq {requested} is no longer stored; retention removed everything below seq {first_seq}, "
        f"so read from seq {first_seq}",
        first_seq=first_seq,
        requested=requested,
    )
