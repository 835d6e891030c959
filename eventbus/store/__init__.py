"""Stores: the `Store` contract, the in-memory store, store URLs, and what store authors need.

A store of your own imports from here: the contract (`Store`,
`StoreFeatures`, `LeaseFence`, the optional `ImmediateAppend`, checked by
`immediate_append`, and the optional `Transactions` with their
`OpenTransaction`, checked by `transactions`, whose refusals
`wrong_connection` builds), the checks every store makes first
(`check_read_arguments`, `check_letter_ids`, `check_lease_ttl`), the error
a fenced save owes (`lease_lost`), the numbering of a batch whose ids may be
stored already (`append_seqs`, `already_stored`), the retention rules
(`Retention`, `CompactionStep`, `Hold`, `compact_by_hand`, `needed_hold`,
`history_truncated`, `RETENTION_QUERY_KEYS`) and `redact_url` for showing
its URL. A store that writes rows also uses `eventbus.store.codec`, a public
module of its own: the one conversion between records and stored primitives.

The other submodules (``base``, ``memory``, ``retention``, ``url``) are how
this package is laid out, not import paths: their public names are the ones
exported here.
"""

from .base import (
    DEFAULT_PAGE_SIZE,
    ImmediateAppend,
    LeaseFence,
    OpenTransaction,
    ProjectionTransaction,
    Store,
    StoreFeatures,
    Transactions,
    already_stored,
    append_seqs,
    check_lease_ttl,
    check_letter_ids,
    check_read_arguments,
    immediate_append,
    lease_lost,
    transactions,
    wrong_connection,
)
from .memory import MemoryStore
from .retention import (
    DEFAULT_MAX_RECORDS,
    RETENTION_QUERY_KEYS,
    CompactionStep,
    CompactResult,
    HistoryNeed,
    Hold,
    Retention,
    compact_by_hand,
    history_truncated,
    needed_hold,
    parse_age,
)
from .url import ENTRY_POINT_GROUP, StoreFactory, open_store, redact_url, store_from_url

__all__ = [
    "CompactResult",
    "CompactionStep",
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_PAGE_SIZE",
    "ENTRY_POINT_GROUP",
    "HistoryNeed",
    "Hold",
    "ImmediateAppend",
    "LeaseFence",
    "MemoryStore",
    "OpenTransaction",
    "ProjectionTransaction",
    "RETENTION_QUERY_KEYS",
    "Retention",
    "Store",
    "StoreFactory",
    "StoreFeatures",
    "Transactions",
    "already_stored",
    "append_seqs",
    "check_lease_ttl",
    "check_letter_ids",
    "check_read_arguments",
    "compact_by_hand",
    "history_truncated",
    "immediate_append",
    "lease_lost",
    "needed_hold",
    "open_store",
    "parse_age",
    "redact_url",
    "store_from_url",
    "transactions",
    "wrong_connection",
]
