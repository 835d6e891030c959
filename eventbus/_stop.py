"""`StopRequest`: how one run of a bus is asked to stop, and told it has."""

from __future__ import annotations

import anyio

__all__ = ["StopRequest"]


class StopRequest:
    """The stop of one run of a bus: asked once (later asks may only forbid
    draining), with the fatal exception a handler raised, if any, and set
    once the run has stopped. Each run of the bus makes a new one."""

    def __init__(self) -> None:
        self.asked = anyio.Event()
        """Set when the run is asked to stop."""
        self.stopped = anyio.Event()
        """Set when the run has stopped."""
        self._drain = True
        self._fatal: BaseException | None = None

    @property
    def drain(self) -> bool:
        """Whether the run drains before it stops (no ask so far forbade it)."""
        return self._drain

    def ask(self, *, drain: bool) -> None:
        """Ask the run to stop, draining first or not; not draining wins."""
        if not self.asked.is_set():
            self._drain = drain
            self.asked.set()
        elif not drain:
            self._drain = False

    def fail(self, fatal: BaseException) -> None:
        """A handler raised `KeyboardInterrupt` or `SystemExit`: stop without
        draining, and keep the first such exception for `take_fatal`."""
        if self._fatal is None:
            self._fatal = fatal
        self.ask(drain=False)

    def take_fatal(self) -> BaseException | None:
        """The fatal exception a handler raised (once), or None."""
        fatal, self._fatal = self._fatal, None
        return fatal
