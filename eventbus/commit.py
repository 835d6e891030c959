"""Group commit: one store append in flight at a time.

Publishes that arrive while an append is in flight wait and go into the next
append together, which keeps routing in seq order (the order catch-up relies
on) and lets a durable store amortise its commit over many publishes.

Cancellation never leaves a publish half-done: a store's append either
commits and returns or stores nothing (the `Store` contract), and a
publisher's wait for the append carrying its records is shielded until that
outcome is decided. A publish that returns stored its records; one that raises stored
nothing. A cancellation that arrives meanwhile takes effect at the caller's
next checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from ._entry import Entry
from .record import Record
from .store.base import Store, immediate_append

__all__ = ["GroupCommit"]


class _Pending:
    """Records waiting for the append in flight to finish."""

    __slots__ = ("done", "error", "records")

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self.done = anyio.Event()
        self.error: BaseException | None = None


class GroupCommit:
    """Appends batches of records to a store, one append at a time.

    Args:
        accepted: called with each batch once it is stored (routing), in seq order.
        at_once: publishes may append without `commit` when the store can
            (see `now`); false when publish middleware must see every append.
    """

    def __init__(self, accepted: Callable[[Sequence[Record]], None], *, at_once: bool = True) -> None:
        self._store: Store | None = None
        self._append_now: Callable[[Sequence[Record]], None] | None = None
        self._append_entry: Callable[[Any, str, int, int, int], Entry] | None = None
        self._at_once = at_once
        self._accepted = accepted
        self._busy = False
        self._pending: list[_Pending] = []
        self._idle: anyio.Event | None = None
        self.now: Callable[[Sequence[Record]], None] | None = None
        """The store's ``append_now`` while a publish may call it instead of
        awaiting `commit` (no append in flight, a store that never waits, no
        publish middleware), else None. The caller routes what it appended:
        nothing runs in between, so seq order holds."""
        self.entry_now: Callable[[Any, str, int, int, int], Entry] | None = None
        """The store's ``append_entry`` (see `eventbus._entry`) whenever `now` is
        not None and the store has one, else None."""

    @property
    def store(self) -> Store | None:
        """The store appended to (set when the bus starts a run)."""
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store
        immediate = immediate_append(store)  # checked even when publish middleware keeps it unused
        self._append_now = immediate.append_now if immediate is not None and self._at_once else None
        self._append_entry = immediate.append_entry if immediate is not None and self._at_once else None
        self._set_at_once(not self._busy)

    @property
    def busy(self) -> bool:
        """An append is in flight."""
        return self._busy

    async def wait_idle(self) -> None:
        """Return once no append is in flight."""
        if self._busy:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    async def commit(self, records: Sequence[Record]) -> None:
        """Store ``records`` (setting their seqs) and route them."""
        if self._busy:
            pending = _Pending(records)
            self._pending.append(pending)
            with anyio.CancelScope(shield=True):
                await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return
        assert self._store is not None
        self._busy = True
        self._set_at_once(False)
        try:
            # a store's append is atomic under cancellation by contract: it
            # commits and returns, or raises having stored nothing
            await self._store.append(records)
            self._accepted(records)
        finally:
            if self._pending:
                with anyio.CancelScope(shield=True):
                    await self._flush()
            self._busy = False
            self._set_at_once(True)
            if self._idle is not None:
                self._idle.set()
                self._idle = None

    def _set_at_once(self, allowed: bool) -> None:
        self.now = self._append_now if allowed else None
        self.entry_now = self._append_entry if allowed else None

    async def _flush(self) -> None:
        store = self._store
        assert store is not None
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await store.append([record for pending in batch for record in pending.records])
                for pending in batch:
                    self._accepted(pending.records)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:
                    # one publisher's bad batch must not fail the others: try each alone
                    for pending in batch:
                        try:
                            await store.append(pending.records)
                            self._accepted(pending.records)
                        except Exception as single_exc:
                            pending.error = single_exc
            for pending in batch:
                pending.done.set()
