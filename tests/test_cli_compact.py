"""``eventbus compact``'s logic, called the way the command line calls it, on real SQLite files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from core_events import Ping

from eventbus import EventBus, HistoryTruncated, StoreError
from eventbus.cli.compact import compact_store, describe, parse_keep_age


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_ages(text: str, age: timedelta) -> None:
    assert parse_keep_age(text) == age


@pytest.mark.parametrize("text", ["30", "d", "30 days", "-1d", "0h", "1e3s", "", "30d12h"])
def test_what_is_not_an_age_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="age") as caught:
        parse_keep_age(text)
    assert repr(text) in str(caught.value)


async def _fill(url: str, count: int) -> None:
    async with EventBus(store=url) as bus:
        await bus.publish_many(Ping(n=n) for n in range(count))


async def test_compact_keeps_the_newest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    await _fill(url, 50)
    result = await compact_store(url, keep=10)
    assert (result.removed, result.first_seq, result.held_by) == (40, 41, None)
    assert describe(url, result) == f"{url}: removed 40 records; history now starts at seq 41"
    async with EventBus(store=url) as bus:
        with pytest.raises(HistoryTruncated, match="seq 41"):
            await anext(bus.replay(Ping))
        assert [record.event.n async for record in bus.replay(Ping, from_seq=41)] == list(range(40, 50))


async def test_compact_by_age_and_from_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    await _fill(url, 20)
    assert (await compact_store(url, keep_age="30d")).removed == 0
    assert (await compact_store(f"{url}?keep=5")).first_seq == 16


async def test_a_durable_checkpoint_holds_history(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    await _fill(url, 20)
    async with EventBus(store=url) as bus:
        await bus.store.save_checkpoints({"audit": 12})
    result = await compact_store(url, keep=0)
    assert (result.removed, result.first_seq) == (11, 12)
    assert describe(url, result).endswith("(held back by the durable checkpoint 'audit' at seq 12)")


async def test_nothing_to_compact_to_is_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    await _fill(url, 3)
    with pytest.raises(ValueError, match="--keep"):
        await compact_store(url)


async def test_a_missing_file_is_an_error_naming_it_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match=r"missing\.db"):
        await compact_store(f"sqlite:///{path}", keep=10)
    assert not path.exists()


async def test_a_bad_age_fails_before_opening(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an age"):
        await compact_store(f"sqlite:///{tmp_path / 'events.db'}", keep_age="soon")
    assert not (tmp_path / "events.db").exists()
