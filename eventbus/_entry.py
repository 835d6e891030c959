"""Entries: the compact form of a record on the hot path.

Building a `Record` (a class call and a Python ``__init__``, then freeing it)
costs about 2 800 instructions, a sixth of what a publish-to-handled cost
with it; a plain tuple of the same fields about 600, and no class of any
shape comes close (a tuple subclass still costs 2 000). So a publish outside
a handler, without headers, to a store that appends at once (`MemoryStore`)
and to subscriptions that take the event alone (see `Inbox.takes_entries`)
keeps an *entry*, the tuple of `Record`'s first constructor arguments, in
the store and on the queues, and as the current delivery; `record_of`
builds the `Record` when something asks for one (a read of the store, a
dead letter, a ``where=`` that raised). Every other
publish builds its `Record` as before, so the store, the queues and the
current delivery hold either kind.

The entry form stays among the few modules that make, carry or deliver
one (tests/test_architecture.py keeps it so): the immediate append of the
store contract and the `MemoryStore` that implements it, the publisher,
which hands an entry from the store to the inboxes, the inbox, the workers,
and the current delivery (`eventbus._context`), which publishing from a
handler reads through `causation_of`. Everywhere else sees records. Code
that looks into an item goes through the functions here; only the single
worker's innermost loop tests ``type(item) is tuple`` and reads
``item[SEQ]`` / ``item[EVENT]`` inline, where a call per delivery would
cost about 400 instructions of a one-handler publish-to-handled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from .record import Record

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing's own from Python 3.13

__all__ = [
    "EVENT",
    "Entry",
    "Item",
    "SEQ",
    "causation_of",
    "event_of",
    "id_of",
    "is_entry",
    "record_of",
    "recorded_at_ns_of",
    "seq_of",
    "type_of",
]

Entry = tuple[int, Any, str, int, int, int]
"""(seq, event, type, version, event id, recorded_at ns): `Record`'s first
positional arguments, all an event published outside a handler, without
headers, has (the others' defaults say: no correlation or causation of its
own, no headers, causation depth 0). Six fields, not ten: a smaller tuple is
cheaper to build, free and walk for the garbage collector."""

Item = Record | Entry
"""What the store, a queue or the current delivery holds."""

SEQ: Final = 0
"""``entry[SEQ]``: an entry's seq, where a hot loop reads it without a call."""
EVENT: Final = 1
"""``entry[EVENT]``: an entry's event, where a hot loop reads it without a call."""


def is_entry(item: Item) -> TypeIs[Entry]:
    """True for an entry, False for a `Record`."""
    return type(item) is tuple


def record_of(item: Item) -> Record:
    """The `Record` of ``item`` (built anew for an entry)."""
    return item if isinstance(item, Record) else Record(*item)


def id_of(item: Item) -> int:
    """The event id of ``item`` as an int (``UUID.int``), what an index of ids keys on."""
    event_id = item.ids[0] if isinstance(item, Record) else item[4]
    return event_id if isinstance(event_id, int) else event_id.int


def seq_of(item: Item) -> int:
    return item.seq if isinstance(item, Record) else item[0]


def type_of(item: Item) -> str:
    return item.type if isinstance(item, Record) else item[2]


def event_of(item: Item) -> Any:
    """The event (decoded from a record read back from a store)."""
    return item.event if isinstance(item, Record) else item[1]


def recorded_at_ns_of(item: Item) -> int:
    return item.recorded_at_ns if isinstance(item, Record) else item[5]


def causation_of(item: Item) -> tuple[UUID | int, UUID | int, int]:
    """(its event id, its correlation id, its causation depth): what an event
    published from ``item``'s handler inherits."""
    if not isinstance(item, Record):
        return item[4], item[4], 0
    event_id, correlation, _ = item.ids
    return event_id, event_id if correlation is None else correlation, item.depth
