"""``eventbus stats``: what a store holds, and how far behind durable subscriptions are."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..store.url import redact_url
from ._common import opened_store, people, run, url_argument

__all__ = ["stats_command", "store_stats"]


async def store_stats(url: str) -> dict[str, Any]:
    """Head, first stored seq, durable positions with their lag, and dead letters per subscription.

    The store must exist; the URL in the result has its password hidden.
    """
    async with opened_store(url) as store:
        head = await store.head()
        first_seq = store.first_seq
        checkpoints = await store.checkpoints()
        letters = await store.dead_letters()
    return {
        "store": redact_url(url),
        "head": head,
        "first_seq": first_seq,
        "subscriptions": {
            name: {"position": position, "lag": head - position} for name, position in sorted(checkpoints.items())
        },
        "dead_letters": dict(sorted(Counter(letter.subscription for letter in letters).items())),
    }


@click.command("stats")
@url_argument
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
def stats_command(url: str, as_json: bool) -> None:
    """Show the head, the first seq still stored, durable positions and lag, and dead letters.

    Durable subscriptions appear once they have saved a position.
    """
    stats = run(store_stats, url)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    console = people()
    console.print(
        Text.assemble(
            "store ",
            (stats["store"], "bold"),
            "  head ",
            (str(stats["head"]), "bold"),
            "  first seq ",
            (str(stats["first_seq"]), "bold"),
        )
    )
    positions = Table("durable subscription", title="Checkpoints", title_justify="left")
    positions.add_column("position", justify="right")
    positions.add_column("lag", justify="right")
    for name, row in stats["subscriptions"].items():
        positions.add_row(name, str(row["position"]), str(row["lag"]))
    console.print(positions if stats["subscriptions"] else "no durable subscription has saved a position")
    letters = Table("subscription", title="Dead letters", title_justify="left")
    letters.add_column("dead letters", justify="right")
    for name, count in stats["dead_letters"].items():
        letters.add_row(name, str(count))
    console.print(letters if stats["dead_letters"] else "no dead letters")
