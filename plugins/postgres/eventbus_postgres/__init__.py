"""eventbus-postgres: the PostgreSQL store for eventbus.

Install it and ``EventBus(store="postgresql://user@host:5432/db")`` works:
the ``postgresql`` and ``postgres`` URL schemes are registered under the
``eventbus.stores`` entry point group.
"""

from ._options import DEFAULT_SCHEMA, PostgresOptions
from ._schema import SCHEMA_VERSION
from ._store import PostgresStore

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresOptions", "PostgresStore"]
