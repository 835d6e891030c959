"""Dead letters: deliveries that failed for good, kept in the store.

A delivery that still fails after its last retry, times out on its last
attempt, whose ``where=`` or ``key=`` raised, or whose event cannot be
decoded becomes a `DeadLetter` of its subscription instead of vanishing.
Everything about dead letters is here:

- `DeadLetter`: the letter, as every store keeps it;
- `bury`: storing one, the only way a letter is made. The delivery pipeline
  calls it where a delivery fails for good (and counts the letter there), a
  redrive where a letter fails again, and a plugin for what it cannot
  deliver (the NATS bridge, for an inbound message it cannot ingest);
- `DeadLetters` (``bus.dead_letters``): listing, redriving and purging them.

`DeadLetter` and `DeadLetters` are also importable from `eventbus`; `bury`,
which only plugins need, from here.
"""

from ._bury import LetterBox, bury
from ._redrive import DeadLetters
from .letter import DeadLetter

__all__ = ["DeadLetter", "DeadLetters", "LetterBox", "bury"]
