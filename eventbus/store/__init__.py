"""Stores: the `Store` contract, the in-memory store, and store URLs."""

from .base import (
    DEFAULT_PAGE_SIZE,
    ImmediateAppend,
    Store,
    StoreFeatures,
    check_lease_ttl,
    check_letter_ids,
    check_read_arguments,
    immediate_append,
)
from .memory import MemoryStore
from .retention import DEFAULT_MAX_RECORDS, CompactResult, HistoryNeed, Hold, Retention, parse_age
from .url import ENTRY_POINT_GROUP, open_store, store_from_url

__all__ = [
    "CompactResult",
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_PAGE_SIZE",
    "ENTRY_POINT_GROUP",
    "HistoryNeed",
    "Hold",
    "ImmediateAppend",
    "MemoryStore",
    "Retention",
    "Store",
    "StoreFeatures",
    "check_lease_ttl",
    "check_letter_ids",
    "check_read_arguments",
    "immediate_append",
    "open_store",
    "parse_age",
    "store_from_url",
]
