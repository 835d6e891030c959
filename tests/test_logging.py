"""Where eventbus's log lines go (DESIGN, "Logging"), in a fresh interpreter each:
nothing configured (warnings and errors only, on stderr), the standard
library configured (the ``"eventbus"`` logger and its level decide), and
structlog configured (the application's own pipeline)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

APP = textwrap.dedent(
    """
    import anyio
    from eventbus import Event, EventBus

    class Tick(Event, name="logging.tick"):
        n: int

    async def main() -> None:
        async with EventBus() as bus:
            @bus.subscribe(name="boom")
            async def boom(event: Tick) -> None:
                raise RuntimeError(f"no {event.n}")

            for n in range(3):
                await bus.publish(Tick(n=n))
            await bus.drain()

    anyio.run(main)
    """
)


def _run(setup: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(setup) + APP],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_an_application_that_configured_nothing_sees_errors_only_on_stderr() -> None:
    result = _run("")
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("delivery failed, dead-lettered subscription='boom'") for line in lines)
    assert "published" not in result.stderr


def test_the_standard_library_configuration_decides_levels_and_format() -> None:
    result = _run(
        """
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(name)s|%(levelname)s|%(message)s")
        """
    )
    lines = result.stderr.splitlines()
    published = [line for line in lines if line.startswith("eventbus|DEBUG|published ")]
    assert len(published) == 3
    assert "seq=1" in published[0]
    assert "type='logging.tick'" in published[0]
    errors = [line for line in lines if line.startswith("eventbus|ERROR|delivery failed")]
    assert len(errors) == 3


def test_the_eventbus_logger_level_silences_the_library_alone() -> None:
    result = _run(
        """
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(name)s|%(levelname)s|%(message)s")
        logging.getLogger("eventbus").setLevel(logging.CRITICAL)
        logging.getLogger("app").debug("the application's own line")
        """
    )
    lines = result.stderr.splitlines()
    assert "app|DEBUG|the application's own line" in lines
    assert not [line for line in lines if line.startswith("eventbus|")]


def test_an_application_that_configured_structlog_gets_the_events_in_its_pipeline() -> None:
    result = _run(
        """
        import logging
        import structlog
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )
        """
    )
    assert result.stderr == ""
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [entry["event"] for entry in entries] == ["delivery failed, dead-lettered"] * 3
    assert {entry["subscription"] for entry in entries} == {"boom"}
    assert [entry["seq"] for entry in entries] == [1, 2, 3]
    assert all(entry["level"] == "error" for entry in entries)
