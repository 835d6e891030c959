"""Every program in ``examples/`` runs as a real process and prints what it promises.

Each example file needs an entry in `EXPECTED` (the lines its output must
contain, and whether it gets a store path): adding an example without one
fails the suite, and so does an entry whose file is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60.0  # seconds; each example finishes in well under two


@dataclass(frozen=True)
class Expected:
    """What one example must print.

    Attributes:
        lines: substrings that must each appear in its stdout.
        store: a file name under the test's tmp_path passed as the store
            argument, or None to run it without arguments.
    """

    lines: tuple[str, ...]
    store: str | None = None


EXPECTED: dict[str, Expected] = {
    "quickstart.py": Expected(
        lines=(
            "subscriptions: ship, us-desk, activity, refunds",
            "published A1 as seq 1",
            "  us-desk: order A2 in USD (seq 2)",
            "  refund: order A1 (changed my mind)",
            "stats activity: delivered=4 position=4",
            "  seq 2: OrderPlaced(order_id='A2', amount=99.5, currency='USD')",
            "replayed 4 events in all",
        ),
    ),
    "order_service.py": Expected(
        lines=(
            "  big-orders: A2 (180.00) flagged for review, seq 2",
            "  invoicing      delivered=2 retried=2 dead_lettered=1",
            "dead letters of invoicing: 1",
            "LookupError: no e-mail address for customer 'bob' after 3 attempts",
            "  invoicing: invoice for A2 sent to bob@example.com",
            "redriven: 1, dead letters left: 0",
            "shop.invoice_sent      caused by seq",
        ),
        store="orders.db",
    ),
    "durable_resume.py": Expected(
        lines=(
            "first run stopped after handling 2 events; checkpoint at seq 2",
            "second run caught up on seqs [3, 4], then handled [5] live",
            "stored checkpoint: welcome-mails at seq 5",
            "handled twice: none",
        ),
        store="durable.db",
    ),
    "catch_up.py": Expected(
        lines=(
            "stored 2000 events of history (seqs 1..2000)",
            "history then live: read the store up to seq",
            "every stored event from seq 1 arrived once, in seq order: no gap, no duplicate",
        ),
    ),
    "backpressure.py": Expected(
        lines=(
            "  after drain:      routed=100 delivered=11 dropped=89 pending=0 behind=False",
            "  the handler saw 11 events: [1, 91, 92] ... [98, 99, 100]",
            "  the handler saw 11 events: [1, 2, 3] ... [9, 10, 11]",
            "  after drain:      routed=100 delivered=100 dropped=0 pending=0 behind=False",
            "every policy accounted for all 100 events",
        ),
    ),
    "schema_evolution.py": Expected(
        lines=(
            "  seq 1: stored as v1, read as OrderPlaced v2: OrderPlaced(order_id='A1', amount_cents=1999",
            "  seq 3: stored as v2, read as OrderPlaced v2",
            "revenue subscription saw: A1=1999 EUR (stored v1), A2=25000 EUR (stored v1), A3=4200 USD (stored v2)",
        ),
        store="evolution.db",
    ),
    "fastapi_service.py": Expected(
        lines=(
            "POST /orders A2 2500.00 -> 202",
            "POST /orders A4 -5.00 -> 422 (Input should be greater than 0)",
            "GET /orders/A1 -> 200 paid",
            "GET /orders/A2 -> 200 placed",
            "GET /orders/A9 -> 404 no order 'A9'",
            "GET /health: payments   delivered=2 retried=2 dead_lettered=1 pending=0",
            "GET /health: order-book delivered=5 retried=0 dead_lettered=0 pending=0",
            "dead letters: ['payments: A2: 2500.00 is over the card limit of 1000.00']",
            "restarted on the same store: the read model holds 3 orders, rebuilt by replay",
        ),
        store="orders.db",
    ),
    "flask_service.py": Expected(
        lines=(
            "POST /orders A2 2500.00 -> 202",
            "POST /orders A4 -5.00 -> 422 (Input should be greater than 0)",
            "POST /orders B1..B8 from 8 threads at once -> 202 202 202 202 202 202 202 202; 8 distinct seqs",
            "GET /orders/A1 -> 200 paid",
            "GET /orders/A2 -> 200 placed",
            "GET /orders/B8 -> 200 paid",
            "GET /health: payments   delivered=10 retried=2 dead_lettered=1 pending=0",
            "dead letters: ['payments: A2: 2500.00 is over the card limit of 1000.00']",
            "bus stopped: POST /orders A5 -> 503 (cannot publish OrderPlaced: the bus is stopped)",
            "restarted on the same store: the read model holds 11 orders, rebuilt by replay",
        ),
        store="orders.db",
    ),
    "two_services.py": Expected(
        lines=(
            "shop: order A1 stored as seq 1, on its way to billing",
            "  billing: charging order A1 (12.50), from shop",
            "  billing: charging order A2 (99.00), from shop",
            "shop: order A1 paid (12.50), seq 3 here, origin billing, caused by the order: True",
            "shop: order A2 paid (99.00), seq 4 here, origin billing, caused by the order: True",
            "both services stopped; billing exited with status 0",
        ),
    ),
    "orders_outbox.py": Expected(
        lines=(
            "  order 1: ada, 120.00, published as seq 1",
            "  ada's order of 980.00 rolled back (980.00 is over the card limit): no row, no event",
            "  the projection applied seqs [1, 2]",
            "  the projection applied seqs [3]: it resumed after its checkpoint",
            "    ada    2 orders    135.00",
            "  the projection applied seqs [1, 2, 3] again, from the history",
            "  the read model agrees with the orders table: every order counted once",
        ),
        store="shop.db",
    ),
    "custom_middleware.py": Expected(
        lines=(
            "  [publish] stored 3 event(s) as seqs 2..4 ['media.image_uploaded']",
            "  [trace] search-index seq 3 failed: img-3 is too large to index",
            "  [slow] thumbnails took",
            "  thumbnails    calls=4 failures=0",
            "  search-index  calls=4 failures=1",
            "dead letter: search-index seq 3 img-3 is too large to index",
        ),
    ),
}


def example_files() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.py"))


def run_example(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` in a fresh interpreter, failing the test on a non-zero exit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{name} exited with {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, f"{name} printed a traceback:\n{result.stderr}"
    return result


def test_every_example_has_expected_output_and_every_entry_an_example() -> None:
    found = example_files()
    assert found, f"no examples found in {EXAMPLES}"
    assert sorted(EXPECTED) == found, "add the new example to EXPECTED (or remove the entry of a deleted one)"


def test_the_examples_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    missing = [name for name in example_files() if f"`{name}`" not in readme]
    assert not missing, f"examples/README.md does not list {missing}"


@pytest.mark.parametrize("name", example_files())
def test_example_runs_and_prints_what_it_promises(name: str, tmp_path: Path) -> None:
    expected = EXPECTED.get(name)
    if expected is None:
        pytest.fail(f"{name} has no entry in EXPECTED in {__file__}")
    args = [str(tmp_path / expected.store)] if expected.store else []

    result = run_example(name, tmp_path, *args)

    missing = [line for line in expected.lines if line not in result.stdout]
    assert not missing, f"{name} did not print {missing}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    # The store file given is the only thing an example may write (SQLite may keep -wal/-shm beside it).
    written = sorted(path.name for path in tmp_path.iterdir())
    allowed = expected.store or "<nothing>"
    assert all(file.startswith(allowed) for file in written), f"{name} wrote {written} into its working directory"
    if expected.store:
        assert expected.store in written, f"{name} did not use the store file it was given"


@pytest.mark.parametrize("name", [name for name, expected in EXPECTED.items() if expected.store])
def test_example_without_a_store_argument_writes_only_to_a_temporary_directory(name: str, tmp_path: Path) -> None:
    result = run_example(name, tmp_path)

    assert result.stdout.strip(), f"{name} printed nothing"
    assert not list(tmp_path.iterdir()), f"{name} wrote into its working directory"
