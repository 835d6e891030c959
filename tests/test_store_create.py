"""``store_from_url(url, create=False)`` with store factories that do and do not take it, and ``redact_url``."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from eventbus import MemoryStore, StoreError
from eventbus.store import url as url_module
from eventbus.store.url import redact_url, store_from_url


class LegacyStore(MemoryStore):
    """A third party's store whose factory predates ``create=``."""

    @classmethod
    def from_url(cls, url: str) -> LegacyStore:
        return cls()


class ModernStore(MemoryStore):
    """A store whose factory takes ``create=`` and remembers it."""

    def __init__(self, create: bool) -> None:
        super().__init__()
        self.create = create

    @classmethod
    def from_url(cls, url: str, *, create: bool = True, **options: Any) -> ModernStore:
        return cls(create)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two installed store plugins, ``legacy://`` and ``modern://``, as entry points name them."""
    installed = [
        EntryPoint(name="legacy", value=f"{__name__}:LegacyStore", group=url_module.ENTRY_POINT_GROUP),
        EntryPoint(name="modern", value=f"{__name__}:ModernStore", group=url_module.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(url_module, "entry_points", lambda group: installed)


@pytest.mark.usefixtures("plugins")
def test_create_reaches_a_factory_that_takes_it() -> None:
    store = store_from_url("modern://x", create=False)
    assert isinstance(store, ModernStore)
    assert store.create is False
    default = store_from_url("modern://x")
    assert isinstance(default, ModernStore)
    assert default.create is True


@pytest.mark.usefixtures("plugins")
def test_a_factory_without_create_works_by_default_and_refuses_create_false_by_name() -> None:
    assert isinstance(store_from_url("legacy://x"), LegacyStore)
    with pytest.raises(
        StoreError, match=r"'legacy' store cannot be opened without creating it .*takes no create="
    ) as caught:
        store_from_url("legacy://user:s3cret@host/x", create=False)
    assert "s3cret" not in str(caught.value)


def test_memory_ignores_create() -> None:
    assert isinstance(store_from_url("memory://", create=False), MemoryStore)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/events?schema=x", "postgresql://app:***@db:5432/events?schema=x"),
        ("postgresql://app@db/events", "postgresql://app@db/events"),
        ("postgresql://db/events?password=s3cret&schema=a", "postgresql://db/events?password=***&schema=a"),
        ("postgresql://app:s3:cret@[::1]:5432/events", "postgresql://app:***@[::1]:5432/events"),
        ("sqlite:////var/lib/app/events.db", "sqlite:////var/lib/app/events.db"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url_hides_passwords_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("given", "suggested"),
    [
        ("events.db", "use 'sqlite:///events.db'"),
        ("data/events.db", "use 'sqlite:///data/events.db'"),
        ("/srv/events.db", "use 'sqlite:////srv/events.db'"),
    ],
)
def test_a_file_path_instead_of_a_url_suggests_its_sqlite_url(given: str, suggested: str) -> None:
    with pytest.raises(ValueError, match="not a store URL") as caught:
        store_from_url(given)
    assert suggested in str(caught.value)


@pytest.mark.parametrize(
    ("url", "suggested"),
    [("sqllite:///events.db", "sqlite"), ("postgress://app:pw@db/events", "postgres"), ("memroy://", "memory")],
)
def test_a_misspelt_scheme_gets_a_did_you_mean(url: str, suggested: str) -> None:
    with pytest.raises(StoreError, match=f"did you mean '{suggested}'") as caught:
        store_from_url(url)
    assert "pw" not in str(caught.value)


def test_an_unknown_scheme_far_from_any_known_one_gets_no_guess() -> None:
    with pytest.raises(StoreError, match="'nosuch'") as caught:
        store_from_url("nosuch://x")
    assert "did you mean" not in str(caught.value)
