"""eventbus-sqlite: the embedded durable store for eventbus, one SQLite file.

```python
from eventbus import EventBus

bus = EventBus(store="sqlite:///events.db")
```

Installing this distribution registers the ``sqlite`` URL scheme under the
``eventbus.stores`` entry point group; `SqliteStore` can also be made
directly. Only the standard library's `sqlite3` is used.
"""

from ._options import SqliteOptions, Synchronous
from ._schema import SCHEMA_VERSION
from ._store import SqliteStats, SqliteStore
from ._url import parse_url

__all__ = ["SCHEMA_VERSION", "SqliteOptions", "SqliteStats", "SqliteStore", "Synchronous", "parse_url"]
