# pyright: strict, reportUnnecessaryTypeIgnoreComment=true
"""Mistakes that ``mypy --strict`` and pyright (strict) must report.

Each line that has to fail ends with ``# type: ignore[<mypy's code>]  #
pyright reports <rule>``. Both checkers take an ignore comment that silences
nothing for an error (mypy's ``warn_unused_ignores``, on under ``--strict``;
pyright's ``reportUnnecessaryTypeIgnoreComment``, on above), so this file
type-checks only while every mistake below is still reported. Pyright
honours ``# type: ignore`` too, whatever the code in brackets, so
``tests/test_typing_errors.py`` also checks the exact codes and rules: it
strips the comments from a copy and compares what each checker reports
there, line by line.

Checked with ``api.py`` (``[tool.mypy]``), and by CI on the installed wheels
with ``user_app.py``. The code itself is never run.
"""

from __future__ import annotations

from eventbus import Event, EventBus, Record
from eventbus.testing import TestBus


class OrderPlaced(Event, name="typing.errors.order.placed"):
    order_id: str
    amount: float


class BigOrderPlaced(OrderPlaced, name="typing.errors.order.big"):
    approved_by: str


class PaymentCaptured(Event, name="typing.errors.payment.captured"):
    order_id: str


bus = EventBus()


# a handler of payments subscribed to orders: it would be handed an OrderPlaced
@bus.subscribe(OrderPlaced)  # type: ignore[arg-type]  # pyright reports reportArgumentType
async def capture(event: PaymentCaptured) -> None: ...


# a subclass is not enough: every OrderPlaced is delivered, big or not
@bus.subscribe(OrderPlaced, name="approvals")  # type: ignore[arg-type]  # pyright reports reportArgumentType
def approve(event: BigOrderPlaced, record: Record) -> None: ...


# where= and key= are functions of the subscribed type: a misspelt field is caught
@bus.subscribe(OrderPlaced, where=lambda e: e.amont > 100)  # type: ignore[attr-defined]  # pyright reports reportAttributeAccessIssue
async def audit(event: OrderPlaced) -> None: ...


@bus.subscribe(OrderPlaced, key=lambda e: e.order)  # type: ignore[attr-defined]  # pyright reports reportAttributeAccessIssue
async def ship(event: OrderPlaced) -> None: ...


# the same checks for the plain call (mypy says it "cannot infer" the event type
# that both the class and the handler would have to be)
bus.subscribe(PaymentCaptured, audit)  # type: ignore[misc]  # pyright reports reportCallIssue
bus.subscribe(OrderPlaced, print, where=lambda e: e.ammount > 1)  # type: ignore[attr-defined]  # pyright reports reportAttributeAccessIssue


# TestBus's where= is typed the same way
def a_test(tb: TestBus) -> None:
    tb.assert_published(OrderPlaced, where=lambda e: e.amont > 1)  # type: ignore[attr-defined]  # pyright reports reportAttributeAccessIssue
