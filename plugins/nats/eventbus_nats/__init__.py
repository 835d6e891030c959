"""eventbus-nats: carry events between services over NATS JetStream.

`NatsBridge` is a bus plugin: outbound events are forwarded from the local
store to a JetStream stream, inbound events are taken from the service's
durable consumer into the local store, as CloudEvents 1.0 in the binary
content mode. See the guide's *Running several services* page.
"""

from ._bridge import (
    DEFAULT_ACK_WAIT,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_PUBLISH_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    NatsBridge,
)
from ._errors import BadHeader, BadMessage, PayloadTooLarge
from ._inbound import DEFAULT_MAX_DELIVER, FETCH_BATCH, MAX_REDELIVERY_DELAY, REDELIVERY_DELAY
from ._outbound import PUBLISH_WINDOW
from ._subjects import subject_of
from ._wire import CE_ID_NAMESPACE, INT_HEADER_MAX

__all__ = [
    "BadHeader",
    "BadMessage",
    "CE_ID_NAMESPACE",
    "DEFAULT_ACK_WAIT",
    "DEFAULT_MAX_DELIVER",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_PUBLISH_TIMEOUT",
    "FETCH_BATCH",
    "INT_HEADER_MAX",
    "MAX_REDELIVERY_DELAY",
    "NatsBridge",
    "PUBLISH_WINDOW",
    "PayloadTooLarge",
    "REDELIVERY_DELAY",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "subject_of",
]
