"""eventbus-nats: carry events between services over NATS JetStream.

`NatsBridge` is a bus plugin: outbound events are forwarded from the local
store to a JetStream stream, inbound events are taken from the service's
durable consumer into the local store. See the guide's *Running several
services* page.
"""

from ._bridge import DEFAULT_ACK_WAIT, DEFAULT_MAX_PAYLOAD, DEFAULT_PUBLISH_TIMEOUT, START_TIMEOUT, NatsBridge
from ._errors import BadMessage, PayloadTooLarge
from ._inbound import FETCH_BATCH
from ._subjects import subject_of

__all__ = [
    "BadMessage",
    "DEFAULT_ACK_WAIT",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_PUBLISH_TIMEOUT",
    "FETCH_BATCH",
    "NatsBridge",
    "PayloadTooLarge",
    "START_TIMEOUT",
    "subject_of",
]
