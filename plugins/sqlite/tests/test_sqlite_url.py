"""Store URLs: the SQLAlchemy forms, options in the query string, and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eventbus_sqlite import SqliteOptions, SqliteStore, parse_url

from eventbus import EventBus
from eventbus.store import store_from_url


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///events.db", Path("events.db")),
        ("sqlite:///data/events.db", Path("data/events.db")),
        ("sqlite:////var/lib/app/events.db", Path("/var/lib/app/events.db")),
        ("sqlite:////tmp/with%20space.db", Path("/tmp/with space.db")),
        ("sqlite:////tmp/caf%C3%A9%3F%23%25.db", Path("/tmp/café?#%.db")),
        ("sqlite:////tmp/a%2e%2eb.db", Path("/tmp/a..b.db")),
        ("sqlite:///../events.db", Path("../events.db")),
        ("sqlite:////tmp/back\\slash.db", Path("/tmp/back\\slash.db")),
        ("SQLite+pysqlite:///events.db", Path("events.db")),
    ],
)
def test_paths(url: str, path: Path) -> None:
    assert parse_url(url) == (path, SqliteOptions())


def test_options_in_the_query_string() -> None:
    _, options = parse_url("sqlite:///events.db?synchronous=NORMAL&busy_timeout=10&poll_interval=0.5")
    assert options == SqliteOptions(synchronous="normal", busy_timeout=10.0, poll_interval=0.5)


def test_a_relative_url_is_anchored_where_the_store_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore.from_url("sqlite:///events.db")
    assert store.path == tmp_path / "events.db"


def test_the_entry_point_makes_a_sqlite_store(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path}/events.db", synchronous="normal")
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "events.db"
    assert store.options.synchronous == "normal"


def test_keyword_options_override_the_url() -> None:
    store = SqliteStore.from_url("sqlite:///events.db?synchronous=normal&busy_timeout=2", synchronous="full")
    assert store.options == SqliteOptions(synchronous="full", busy_timeout=2.0)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite://:memory:"])
def test_in_memory_databases_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"in-memory.*memory://"):
        parse_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://localhost/db", "not a SQLite store URL"),
        ("sqlite:/events.db", "not a SQLite store URL"),
        ("sqlite://host/events.db", "names the host 'host'"),
        ("sqlite://events.db", "names the host 'events.db'"),
        ("sqlite:////tmp/", "names no database file"),
        ("sqlite:///events.db?colour=blue", "unknown SQLite store option 'colour'"),
        ("sqlite:///events.db?synchronous=off", "synchronous must be one of"),
        ("sqlite:///events.db?busy_timeout=soon", "busy_timeout must be a number"),
        ("sqlite:///events.db?busy_timeout=0", "busy_timeout must be a positive number"),
        ("sqlite:///events.db?poll_interval", "cannot read the options"),
        ("sqlite:///data/%2e%2e/events.db", r"spells the path segment '\.\.' with escapes \('%2e%2e'\)"),
        ("sqlite:///%2E%2E/events.db", r"spells the path segment '\.\.' with escapes"),
        ("sqlite:///data/%2e/events.db", r"spells the path segment '\.' with escapes"),
        ("sqlite:///data%2fevents.db", r"escapes a path separator \('data%2fevents.db' decodes to 'data/events.db'\)"),
        ("sqlite:///%2e%2e%2Fevents.db", "escapes a path separator"),
        ("sqlite:///data%5Cevents.db", "escapes a path separator"),
    ],
)
def test_bad_urls_are_refused_naming_the_url(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_url(url)
    assert url in str(caught.value)


def test_unknown_keyword_options_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown SQLite store option 'colour'"):
        SqliteStore.from_url("sqlite:///events.db", colour="blue")


@pytest.mark.parametrize(
    "options",
    [{"synchronous": "off"}, {"busy_timeout": -1}, {"poll_interval": True}, {"busy_timeout": "5"}],
)
def test_options_are_validated_when_made(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        SqliteOptions(**options)


def test_escaped_dots_never_put_the_file_one_directory_up(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    url = f"sqlite:///{tmp_path}/data/%2e%2e/events.db"
    with pytest.raises(ValueError, match="spells the path segment") as caught:
        store_from_url(url)
    assert url in str(caught.value)
    with pytest.raises(ValueError, match="spells the path segment"):
        EventBus(store=url)
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["data"]
