"""Stores: the `Store` contract, the in-memory store, and store URLs."""

from .base import DEFAULT_PAGE_SIZE, Store, StoreFeatures, check_letter_ids, check_read_arguments
from .memory import MemoryStore
from .url import ENTRY_POINT_GROUP, open_store, store_from_url

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "ENTRY_POINT_GROUP",
    "MemoryStore",
    "Store",
    "StoreFeatures",
    "check_letter_ids",
    "check_read_arguments",
    "open_store",
    "store_from_url",
]
