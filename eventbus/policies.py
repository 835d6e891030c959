"""Delivery policies: what happens when a subscription is full, and retries."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["Backpressure", "Retry"]

Backpressure = Literal["block", "drop_oldest", "drop_newest", "spill"]
"""What a full subscription (``max_pending`` events waiting) does with the next one.

- ``"block"``: ``publish`` waits for room (up to the bus's ``publish_timeout``).
- ``"drop_oldest"`` / ``"drop_newest"``: drop one event, counted and logged.
- ``"spill"``: keep nothing more in memory; read the missed events back from
  the store once the subscription has caught up. Nothing is lost while the
  store holds them: past the `MemoryStore`'s hard bound (``max_records``)
  the oldest are gone, and those are counted as dropped and logged.
"""

BACKPRESSURE_POLICIES: frozenset[str] = frozenset(get_args(Backpressure))


@dataclass(frozen=True)
class Retry:
    """How often a failing handler is called again, and how long to wait between.

    Args:
        attempts: total calls, the first included (``Retry(attempts=1)`` never
            retries). Always finite: a delivery that keeps failing ends as a
            dead letter.
        backoff: seconds before the second attempt.
        factor: each further wait is ``factor`` times the previous one.
        max_backoff: cap on a single wait, in seconds.
        jitter: fraction of each wait that is randomised (0.1 waits between
            90% and 110% of the nominal delay), so that many failing
            deliveries do not retry in lockstep.
    """

    attempts: int = 3
    backoff: float = 0.1
    factor: float = 2.0
    max_backoff: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retry.attempts must be an int >= 1, got {self.attempts!r}")
        for name in ("backoff", "factor", "max_backoff", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"Retry.{name} must be a finite number, got {value!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("Retry.backoff and Retry.max_backoff must be >= 0")
        if self.factor < 1:
            raise ValueError(f"Retry.factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Retry.jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure (1-based).

        The cap applies before the power is taken, so any number of attempts
        gives ``max_backoff`` rather than overflowing.
        """
        exponent = failed_attempts - 1
        if self.backoff <= 0 or self.max_backoff <= 0:
            nominal = 0.0
        elif exponent * math.log(self.factor) >= math.log(self.max_backoff / self.backoff):
            nominal = self.max_backoff
        else:
            nominal = self.backoff * self.factor**exponent
        if self.jitter:
            nominal *= 1 + self.jitter * (2 * random.random() - 1)
        return max(nominal, 0.0)
