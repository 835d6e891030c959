"""``eventbus catalog``: JSON, Markdown and AsyncAPI 3.0, run as a real child process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cli_app import AUDIT

TESTS = Path(__file__).parent
ROOT = TESTS.parent
DEMO_PAGE = ROOT / "docs" / "reference" / "demo-catalog.md"
DEMO_APP = "eventbus.cli.demo:create_bus"
DEMO_TITLE = "Event catalog of the demo"
WAIT = 30


def _catalog(*args: str, extra_path: Path | None = None) -> str:
    path = os.pathsep.join(filter(None, [str(TESTS), str(extra_path or ""), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "eventbus.cli", "catalog", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_json_lists_event_types_with_schema_and_upcasters_and_the_subscriptions() -> None:
    catalog = json.loads(_catalog("--app", "cli_app:create_bus"))
    events = {event["name"]: event for event in catalog["events"]}
    assert sorted(events) == ["cli.note", "cli.order", "cli.refund"]  # every type the app registered, only those
    order = events["cli.order"]
    assert order["version"] == 1
    assert order["class"] == "cli_app.CliOrder"
    assert order["schema"]["properties"]["amount"]["type"] == "number"
    assert order["schema"]["required"] == ["order_id", "amount"]
    assert order["upcasters"] == []
    refund = events["cli.refund"]
    assert refund["version"] == 2
    assert refund["description"] == "Money going back to a customer (version 2 added the reason)."
    assert refund["upcasters"] == [{"from_version": 1, "to_version": 2, "function": "cli_app.refund_v1_to_v2"}]
    [audit] = catalog["subscriptions"]
    assert audit["name"] == AUDIT
    assert audit["handler"] == "cli_app.create_bus.<locals>.audit"
    assert audit["types"] == audit["receives"] == ["cli.order"]
    assert audit["options"]["durable"] is True
    assert audit["options"]["retry"]["attempts"] == 2
    assert audit["options"]["max_pending"] == 10_000
    assert audit["changed_options"] == ["durable", "retry"]


def test_app_may_name_the_bus_itself_and_a_factory_gets_memory(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(
        "from cli_app import create_bus\n"
        "bus = create_bus('memory://')\n"
        "def factory(url):\n"
        "    assert url == 'memory://', url\n"
        "    return bus\n"
    )
    by_instance = json.loads(_catalog("--app", "service:bus", extra_path=tmp_path))
    by_factory = json.loads(_catalog("--app", "service:factory", "--title", "service", extra_path=tmp_path))
    assert by_instance["title"] == "service:bus"
    assert by_factory["title"] == "service"
    assert by_instance["subscriptions"] == by_factory["subscriptions"]


def test_markdown_and_output_file(tmp_path: Path) -> None:
    out = tmp_path / "catalog.md"
    assert _catalog("--app", "cli_app:create_bus", "--format", "markdown", "-o", str(out)) == ""
    page = out.read_text()
    assert page.startswith("# cli_app:create_bus\n")
    assert "### `cli.refund` v2" in page
    assert "Upcaster from version 1 to 2: `cli_app.refund_v1_to_v2`." in page
    assert "| `order_id` | string | yes |" in page
    assert f"| `{AUDIT}` | `cli_app.create_bus.<locals>.audit` | `cli.order` |" in page


def test_the_docs_page_is_the_demo_catalog() -> None:
    generated = _catalog("--app", DEMO_APP, "--format", "markdown", "--title", DEMO_TITLE)
    assert DEMO_PAGE.read_text() == generated, (
        f"{DEMO_PAGE.relative_to(ROOT)} is out of date; regenerate it with\n"
        f"  eventbus catalog --app {DEMO_APP} --format markdown --title {DEMO_TITLE!r} -o {DEMO_PAGE.relative_to(ROOT)}"
    )


# -- AsyncAPI 3.0 --------------------------------------------------------------------

_KEY = re.compile(r"^[A-Za-z0-9.\-_]+$")
_TOP_LEVEL = {"asyncapi", "id", "info", "servers", "defaultContentType", "channels", "operations", "components"}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: Mapping[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def check_asyncapi_3(document: Mapping[str, Any]) -> None:
    """The shape of an AsyncAPI 3.0 document, and every reference in it resolving."""
    assert document["asyncapi"] == "3.0.0"
    assert set(document) <= _TOP_LEVEL
    info = document["info"]
    assert isinstance(info["title"], str)
    assert isinstance(info["version"], str)
    components = document["components"]
    assert set(components) <= {"schemas", "messages"}
    for kind in ("schemas", "messages"):
        assert all(_KEY.match(key) for key in components[kind]), components[kind].keys()
    for message in components["messages"].values():
        assert isinstance(message["payload"], Mapping)
        assert message["contentType"] == "application/json"
        assert message["headers"]["type"] == "object"
    for channel_id, channel in document["channels"].items():
        assert _KEY.match(channel_id)
        assert isinstance(channel["address"], str)
        for reference in channel["messages"].values():
            assert reference["$ref"].startswith("#/components/messages/")
    for operation_id, operation in document["operations"].items():
        assert _KEY.match(operation_id)
        assert operation["action"] in {"send", "receive"}
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        assert operation["messages"], operation_id
        for message in operation["messages"]:  # 3.0: an operation's messages are its channel's
            assert message["$ref"].startswith(channel_ref + "/messages/")
    for ref in _refs(document):
        _resolve(document, ref)


def test_asyncapi_of_the_demo_is_a_3_0_document_with_a_channel_per_type() -> None:
    document = json.loads(_catalog("--app", DEMO_APP, "--format", "asyncapi", "--app-version", "2.1.0"))
    check_asyncapi_3(document)
    assert document["info"]["version"] == "2.1.0"
    assert sorted(channel["address"] for channel in document["channels"].values()) == [
        "demo.order_placed",
        "demo.order_shipped",
        "demo.payment_captured",
    ]
    receive = {key for key, operation in document["operations"].items() if operation["action"] == "receive"}
    # order-history subscribes to Event: it receives on every channel
    assert {key for key in receive if key.startswith("order-history.")} == {
        "order-history.demo.order_placed",
        "order-history.demo.order_shipped",
        "order-history.demo.payment_captured",
    }
    placed = document["components"]["messages"]["demo.order_placed"]
    schema = _resolve(document, placed["payload"]["$ref"])
    assert schema["required"] == ["order_id", "customer", "amount"]
    assert document["operations"]["fraud-check.demo.order_placed"]["x-eventbus-options"]["retry"]["attempts"] == 3


def test_asyncapi_of_an_app_with_an_upcast_type() -> None:
    document = json.loads(_catalog("--app", "cli_app:create_bus", "--format", "asyncapi"))
    check_asyncapi_3(document)
    refund = document["components"]["messages"]["cli.refund"]
    assert refund["x-eventbus-version"] == 2
    assert refund["summary"] == "Money going back to a customer (version 2 added the reason)."


@pytest.mark.parametrize("bad", [{"asyncapi": "2.6.0"}, {"operations": {"x": {"action": "publish"}}}])
def test_the_shape_check_rejects_what_is_not_asyncapi_3(bad: dict[str, Any]) -> None:
    document = json.loads(_catalog("--app", DEMO_APP, "--format", "asyncapi"))
    document.update(bad)
    with pytest.raises((AssertionError, KeyError)):
        check_asyncapi_3(document)
