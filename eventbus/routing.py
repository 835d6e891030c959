"""Routing: which subscriptions' inboxes an event class goes to.

Subscriptions are indexed by the classes they asked for. The targets of a
class are the inboxes of every subscription registered for a class in its
MRO, computed once per class and cached until the next (un)subscribe or run
of the bus, so the cost of a publish follows the number of matching
subscriptions, not the number of them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .delivery.inbox import Inbox
from .event import Event, check_storable, needs_round_trip
from .exceptions import DuplicateSubscription
from .subscription import Subscription

__all__ = ["Route", "Router"]


class Route:
    """What publishing an instance of one class needs: its stored name and
    version, the inboxes it goes to, in subscription order, whether each
    event must be round-tripped before it is stored (`round_trip`, see
    `eventbus.event.needs_round_trip`), and whether a publish may keep an
    entry instead of a `Record` (`entries`: every inbox takes entries, see
    `eventbus._entry`, and there is no round trip to run)."""

    __slots__ = ("blocking", "entries", "name", "round_trip", "targets", "version")

    def __init__(self, cls: type[Event], targets: tuple[Inbox, ...]) -> None:
        check_storable(cls)
        self.name = cls.__event_type__
        self.version = cls.__event_version__
        self.targets = targets
        self.blocking = tuple(inbox for inbox in targets if inbox.policy == "block")
        self.round_trip = needs_round_trip(cls)
        # the round trip runs where a publish builds a Record: the entry path, the
        # one-handler hot path, stays without a test for it
        self.entries = not self.round_trip and all(inbox.takes_entries for inbox in targets)


class Router(dict[type, Route]):
    """A bus's subscriptions, indexed by name and by class, and the cache of
    routes it makes.

    The router is itself the route cache, a dict from class to `Route`, and
    ``router[cls]`` is the one way to find a route: a hit is a plain dict
    lookup, a miss (`__missing__`) builds the route from the index.
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_name: dict[str, Subscription] = {}
        self.subscriptions: Mapping[str, Subscription] = MappingProxyType(self._by_name)
        """The subscriptions by name, in the order they were added (read-only)."""
        self._by_class: dict[type[Event], list[Subscription]] = {}
        self._order: dict[Subscription, int] = {}
        self._counter = 0
        self.crowded: set[Inbox] = set()
        """The routed inboxes that may be full (`Inbox.share_crowd`): while it is
        empty, a publish need not look at its route's ``"block"`` inboxes."""

    def add(self, subscription: Subscription) -> None:
        """Route to ``subscription`` from now on; `DuplicateSubscription` if its name is taken."""
        if subscription.name in self._by_name:
            raise DuplicateSubscription(
                f"a subscription named {subscription.name!r} already exists on this bus; pass name= to tell them apart"
            )
        self._by_name[subscription.name] = subscription
        self._counter += 1
        self._order[subscription] = self._counter
        for cls in subscription.types:
            self._by_class.setdefault(cls, []).append(subscription)
        self.clear()

    def remove(self, subscription: Subscription) -> None:
        """Route nothing more to ``subscription``."""
        if self._order.pop(subscription, None) is None:
            return
        del self._by_name[subscription.name]
        for cls in subscription.types:
            subs = self._by_class.get(cls)
            if subs is not None and subscription in subs:
                subs.remove(subscription)
                if not subs:
                    del self._by_class[cls]
        self.clear()

    def __missing__(self, cls: type) -> Route:
        """The route of ``cls``, made and cached; `TypeError` if it is not an `Event` class."""
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise TypeError(f"can only publish Event instances, got {cls.__qualname__}")
        found: dict[Subscription, None] = {}
        for klass in cls.__mro__:
            for sub in self._by_class.get(klass, ()):
                found[sub] = None
        ordered = sorted(found, key=self._order.__getitem__)
        targets = tuple(sub.run.inbox for sub in ordered if sub.run is not None)
        for inbox in targets:
            inbox.share_crowd(self.crowded)
        route = self[cls] = Route(cls, targets)
        return route
