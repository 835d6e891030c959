"""``eventbus trace``: what happened because of an event, as its causation tree.

An event published from a handler carries the handled event's id as its
causation id and inherits its correlation id (the id of the chain's first
event). ``trace`` follows those links from an event id (the tree rooted at
that event) or gathers a whole chain by its correlation id (every tree of
it, roots first).

The `Store` contract has no query by correlation or causation id, so the
command reads the history once, page by page, from the first seq still
stored to the head it saw when it started, and keeps only the records of the
trace. A record's cause is stored before it (the handler that published it
ran on the stored cause), which is what lets one pass in seq order find
every descendant; an event ingested from another service before its cause
is still found by its correlation id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import click
from rich.text import Text
from rich.tree import Tree

from ..deadletters import DeadLetter
from ..record import Record
from ..store.codec import UnreadableRecord
from ..store.url import redact_url
from ._common import CommandError, dead_letter_to_json, opened_store, people, record_to_json, run, url_argument
from ._progress import progress
from .history import pages

__all__ = ["Trace", "TraceNode", "trace", "trace_command", "trace_to_json"]

_SHORT_ID = 8
"""Hex digits shown of an event id, more when two ids of a trace end alike (ids differ in their last digits)."""
_ID_LAST_GROUP = 12
"""Hex digits in the last group of a UUID's text: past them, the whole id is shown."""
_NS_PER_MS = 1_000_000


@dataclass
class TraceNode:
    """One event of a trace, with the dead letters of its deliveries and the events it caused, in seq order."""

    record: Record
    dead_letters: list[DeadLetter] = field(default_factory=list)
    children: list[TraceNode] = field(default_factory=list)


@dataclass(frozen=True)
class Trace:
    """What `trace` found.

    Attributes:
        id: the id asked for.
        by: ``"event"`` when it is an event id (one root, that event), or
            ``"correlation"`` (every tree of the chain, roots in seq order).
        roots: the trees; each event appears once, even where stored
            causation ids form a cycle.
        count: how many events the trees hold.
        first_seq / head: the range of seqs read.
        notes: what people should know about the trees' edges: causes not in
            the trace, history removed by retention, causation cycles.
    """

    id: UUID
    by: Literal["event", "correlation"]
    roots: tuple[TraceNode, ...]
    count: int
    first_seq: int
    head: int
    notes: tuple[str, ...]


async def trace(url: str, wanted: UUID) -> Trace:
    """The causation trees of the event or correlation id ``wanted`` in the store at ``url``.

    The store must exist. Raises `CommandError` when no stored record has
    ``wanted`` as its event id or correlation id, saying when retention has
    removed part of the history. A progress bar runs on stderr while it
    reads, when stderr is a terminal.
    """
    async with opened_store(url) as store:
        first_seq = store.first_seq
        head = await store.head()
        kept: dict[int, Record] = {}  # by event id, in seq order: only the records of the trace
        target = wanted.int
        with progress(head - first_seq + 1, label="trace") as advance:
            async for page in pages(store, first_seq, head, ()):
                for record in page:
                    raw_id, correlation, cause = record.ids  # compact: no UUID objects made for the records left out
                    event_id = _as_int(raw_id)
                    if (
                        event_id == target
                        or (correlation is not None and _as_int(correlation) == target)
                        or (cause is not None and _as_int(cause) in kept)
                    ):
                        kept[event_id] = record
                advance(page[-1].seq - page[0].seq + 1)
        letters = await store.dead_letters() if kept else ()
    if not kept:
        read = f"read seqs {first_seq} to {head}" if head >= first_seq else "it holds no records"
        removed = f"; history before seq {first_seq} was removed by retention" if first_seq > 1 else ""
        raise CommandError(f"no event id or correlation id {wanted} in {url} ({read}{removed})")
    return _Forest(wanted, kept, letters, first_seq).trace(head)


class _Forest:
    """Builds a `Trace`'s trees from the kept records (the one owner of the nodes while they grow)."""

    def __init__(self, wanted: UUID, kept: Mapping[int, Record], letters: Iterable[DeadLetter], first_seq: int) -> None:
        self._wanted = wanted
        self._kept = kept
        self._first_seq = first_seq
        self._children: defaultdict[int, list[Record]] = defaultdict(list)
        for event_id, record in kept.items():
            cause = _cause(record)
            if cause is not None and cause != event_id and cause in kept:
                self._children[cause].append(record)
        self._letters: defaultdict[int, list[DeadLetter]] = defaultdict(list)
        for letter in letters:
            self._letters[letter.record.event_id.int].append(letter)
        self._placed: set[int] = set()
        self._notes: list[str] = []

    def trace(self, head: int) -> Trace:
        root = self._kept.get(self._wanted.int)
        if root is not None:
            roots = [self._grow(root)]
            by: Literal["event", "correlation"] = "event"
            if root.causation_id is not None:
                self._notes.append(
                    f"seq {root.seq} was caused by event {root.causation_id}; "
                    f"the correlation id {root.correlation_id} gives the whole chain"
                )
        else:
            roots = self._chain()
            by = "correlation"
        return Trace(self._wanted, by, tuple(roots), len(self._placed), self._first_seq, head, tuple(self._notes))

    def _chain(self) -> list[TraceNode]:
        """Every tree of the correlation id: those whose root's cause is not in the trace, then what cycles hide."""
        roots: list[TraceNode] = []
        causes_missing = False
        for event_id, record in self._kept.items():
            cause = _cause(record)
            if cause is None or cause == event_id or cause not in self._kept:
                roots.append(self._grow(record))
                if cause is not None and cause != event_id:
                    causes_missing = True
                    self._notes.append(
                        f"seq {record.seq} was caused by event {UUID(int=cause)}, "
                        "which this store does not hold under this correlation id"
                    )
        for record in self._kept.values():
            if record.event_id.int not in self._placed:
                self._notes.append(f"seq {record.seq} is part of a causation cycle; shown as a root")
                roots.append(self._grow(record))
        if causes_missing and self._first_seq > 1:
            self._notes.append(f"history before seq {self._first_seq} was removed by retention")
        return roots

    def _grow(self, root: Record) -> TraceNode:
        """The tree under ``root``, each record placed once (so a causation cycle ends)."""
        top = self._node(root)
        stack = [top]
        while stack:
            parent = stack.pop()
            for child in self._children.get(parent.record.event_id.int, ()):
                if child.event_id.int not in self._placed:
                    node = self._node(child)
                    parent.children.append(node)
                    stack.append(node)
        return top

    def _node(self, record: Record) -> TraceNode:
        event_id = record.event_id.int
        self._placed.add(event_id)
        return TraceNode(record, self._letters.get(event_id, []))


def _as_int(value: UUID | int) -> int:
    return value.int if isinstance(value, UUID) else value


def _cause(record: Record) -> int | None:
    cause = record.ids[2]
    return None if cause is None else _as_int(cause)


def trace_to_json(found: Trace, url: str) -> dict[str, Any]:
    """A trace as one JSON object: each node is its record as ``eventbus export`` writes it, plus
    ``dead_letters`` (without their record) and ``children``; the URL has its password hidden."""

    def node_to_json(node: TraceNode) -> dict[str, Any]:
        return {
            **record_to_json(node.record),
            "dead_letters": [
                {key: value for key, value in dead_letter_to_json(letter).items() if key != "record"}
                for letter in node.dead_letters
            ],
            "children": [node_to_json(child) for child in node.children],
        }

    return {
        "store": redact_url(url),
        "id": str(found.id),
        "by": found.by,
        "count": found.count,
        "first_seq": found.first_seq,
        "head": found.head,
        "notes": list(found.notes),
        "roots": [node_to_json(root) for root in found.roots],
    }


def _tree(found: Trace, url: str) -> Tree:
    """The trees under one heading, each event on one line cut to the terminal's width."""
    nodes = _walk(found.roots)
    short = _short_ids(node.record.event_id for node in nodes)
    trees = "" if found.by == "event" else f" in {len(found.roots)} trees"
    heading = Text.assemble((f"{found.by} {found.id}", "bold"), f": {found.count} events{trees}, in {redact_url(url)}")
    top = Tree(heading)
    # (branch, node, the time of its tree's root: None for a root)
    stack: list[tuple[Tree, TraceNode, int | None]] = [(top, root, None) for root in reversed(found.roots)]
    while stack:
        branch, node, started = stack.pop()
        record = node.record
        here = branch.add(_label(record, short[record.event_id], started))
        for letter in node.dead_letters:
            here.add(_letter_label(letter))
        began = record.recorded_at_ns if started is None else started
        stack.extend((here, child, began) for child in reversed(node.children))
    return top


def _label(record: Record, short_id: str, started: int | None) -> Text:
    """seq, type and version, the id's last digits, the time (after the tree root's), the stored JSON."""
    if started is None:
        when = record.recorded_at.isoformat(timespec="milliseconds")
    else:
        when = f"{(record.recorded_at_ns - started) / _NS_PER_MS:+.1f} ms"
    if isinstance(record, UnreadableRecord):
        payload = Text(f"cannot be read: {record.problem}", style="red")
    else:
        data = record.data
        payload = Text(data.decode() if isinstance(data, bytes) else data, style="dim")
    label = Text.assemble(
        (str(record.seq), "bold"),
        "  ",
        (f"{record.type} v{record.version}", "cyan"),
        "  ",
        (short_id, "magenta"),
        "  ",
        when,
        "  ",
        payload,
    )
    label.no_wrap = True
    label.overflow = "ellipsis"
    return label


def _letter_label(letter: DeadLetter) -> Text:
    """The failure first, for people; the letter's id last, for ``dlq redrive --id`` (whole in ``--json``)."""
    error = f"{letter.error_type.rpartition('.')[2]}: {letter.error_message}"
    attempts = f"{letter.attempts} attempt{'' if letter.attempts == 1 else 's'}"
    label = Text.assemble(
        (f"dead letter of {letter.subscription!r}", "red"),
        f" after {attempts}: ",
        (error, "red"),
        f"  id {letter.id}",
    )
    label.no_wrap = True
    label.overflow = "ellipsis"
    return label


def _walk(roots: Sequence[TraceNode]) -> list[TraceNode]:
    nodes: list[TraceNode] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.children)
    return nodes


def _short_ids(ids: Iterable[UUID]) -> dict[UUID, str]:
    """Each id's last hex digits, as few as keep the ids apart (at least eight), else the whole id."""
    texts = {event_id: str(event_id) for event_id in ids}
    for width in range(_SHORT_ID, _ID_LAST_GROUP + 1):
        if len({text[-width:] for text in texts.values()}) == len(texts):
            return {event_id: "…" + text[-width:] for event_id, text in texts.items()}
    return texts


@click.command("trace")
@url_argument
@click.argument("id", metavar="ID", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="One JSON object with whole records and ids, for scripts.")
def trace_command(url: str, id: UUID, as_json: bool) -> None:
    """Show what happened because of an event: its causation tree.

    ID is an event id (the tree rooted at that event: the events its
    handlers published, theirs, and so on) or a correlation id (every tree
    of that chain, roots first). Each line shows the seq, type, the event
    id's last digits, the time (after the root's, for the others) and the
    payload, with the dead letters of its deliveries under it.

    Reads the store's whole history once, page by page. Exits with status 1
    when no record has that id.
    """
    found = run(trace, url, id)
    if as_json:
        try:
            click.echo(json.dumps(trace_to_json(found, url), indent=2))
        except RecursionError:  # only a chain far deeper than any max_causation_depth in use
            raise CommandError(f"the trace of {id} is nested too deeply for JSON; draw it without --json") from None
        return
    console = people()
    console.print(_tree(found, url))
    for note in found.notes:
        console.print(f"note: {note}", soft_wrap=True)  # unbroken, so that its ids can be copied
