"""``eventbus stats``: what a store holds, and how far behind durable subscriptions are."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..store.url import redact_url
from ._common import opened_store

__all__ = ["store_stats"]


async def store_stats(url: str) -> dict[str, Any]:
    """Head, durable positions with their lag, and dead letters per subscription."""
    async with opened_store(url) as store:
        head = await store.head()
        checkpoints = await store.checkpoints()
        letters = await store.dead_letters()
    return {
        "store": redact_url(url),
        "head": head,
        "subscriptions": {
            name: {"position": position, "lag": head - position} for name, position in sorted(checkpoints.items())
        },
        "dead_letters": dict(sorted(Counter(letter.subscription for letter in letters).items())),
    }
