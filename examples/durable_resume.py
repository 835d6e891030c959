"""A durable subscription resumes after a restart.

    python examples/durable_resume.py [STORE]

The example runs the same service twice against one SQLite file, as if the
process had been restarted, and publishes in between while the service is
down. The ``welcome-mails`` subscription is ``durable=True``: its position is
checkpointed in the store, so the second run delivers exactly the events the
first one had not handled, then goes on live.

STORE is the path of a SQLite file or a store URL of a persistent store
(``sqlite:///welcome.db``, ``postgresql://...``). Without it the example
uses a file in a temporary directory and removes it at the end. Run it twice
with the same path and the subscription picks up where it stopped.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import anyio
import structlog

from eventbus import Event, EventBus, Record


class UserSignedUp(Event, name="accounts.user_signed_up"):
    email: str


def store_url(arg: str, default_dir: Path) -> str:
    """A URL as is, a path as a SQLite file; no argument: a file in ``default_dir``."""
    if not arg:
        return f"sqlite:///{default_dir / 'durable.db'}"
    if arg.startswith("memory:"):
        raise SystemExit("durable_resume needs a persistent store: a SQLite path or URL, or a postgresql:// URL")
    return arg if "://" in arg else f"sqlite:///{Path(arg).resolve()}"


def mail_service(store: str, sent: list[int]) -> EventBus:
    """The service as it starts in each process: a bus and its durable subscription."""
    bus = EventBus(store=store)

    # durable=True needs a name that stays the same across restarts: it is the
    # checkpoint's key in the store.
    @bus.subscribe(name="welcome-mails", durable=True)
    async def send_welcome(event: UserSignedUp, record: Record) -> None:
        sent.append(record.seq)
        print(f"  welcome-mails: seq {record.seq} welcome mail to {event.email}")

    return bus


async def sign_up(bus: EventBus, *emails: str) -> None:
    for email in emails:
        seq = await bus.publish(UserSignedUp(email=email))
        print(f"  published sign-up of {email} as seq {seq}")


async def run(store: str) -> None:
    print(f"store: {store}")

    print("first run of the mail service")
    first: list[int] = []
    async with mail_service(store, first) as bus:
        await sign_up(bus, "ada@example.com", "grace@example.com")
        await bus.drain()
        position = bus.stats()["welcome-mails"].position
    # Leaving ``async with`` drained the bus and saved the checkpoint.
    print(f"first run stopped after handling {len(first)} events; checkpoint at seq {position}")

    # Meanwhile another part of the system keeps publishing to the same store,
    # on a bus that has no welcome-mails subscription.
    print("while the mail service is down, the sign-up page publishes")
    async with EventBus(store=store) as web:
        await sign_up(web, "linus@example.com", "barbara@example.com")

    print("second run of the mail service: resuming from the checkpoint")
    second: list[int] = []
    async with mail_service(store, second) as bus:
        await bus.drain()  # the catch-up from the store: what was missed while down
        caught_up = list(second)
        await sign_up(bus, "ken@example.com")  # then live, as usual
        await bus.drain()
    # Checkpoints are written in batches; leaving ``async with`` wrote the last one.
    async with EventBus(store=store) as reader:
        checkpoints = await reader.store.checkpoints()

    print(f"second run caught up on seqs {caught_up}, then handled {second[len(caught_up) :]} live")
    print(f"stored checkpoint: welcome-mails at seq {checkpoints['welcome-mails']}")
    repeated = sorted(set(first) & set(second))
    print(f"handled twice: {repeated or 'none'}")
    # At-least-once: a process killed before its checkpoint was written would
    # see the events after the last saved position again on restart.


async def main() -> None:
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    arg = sys.argv[1] if len(sys.argv) > 1 else ""
    with tempfile.TemporaryDirectory(prefix="eventbus-example-") as tmp:
        await run(store_url(arg, Path(tmp)))


if __name__ == "__main__":
    anyio.run(main)
