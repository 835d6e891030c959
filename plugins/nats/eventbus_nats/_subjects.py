"""Names on the NATS side: the stream's subjects, an event type's subject,
the service's durable consumer.

An event type's subject is ``<stream>.<type name>``. A type name's dots stay
the subject's token separators (``order.placed`` in the stream ``eventbus``
is ``eventbus.order.placed``); inside each token, every character other than
an ASCII letter, a digit, ``-``, ``_`` or ``~`` is percent-encoded as the
UTF-8 bytes of a URL (``%20`` for a space, ``%3E`` for ``>``, ``%25`` for
``%`` itself), and an empty token (two dots in a row, a leading or trailing
dot) is written as a lone ``%``. So no subject holds a character NATS
forbids (whitespace, wildcards), and two type names never share a subject.
"""

from __future__ import annotations

import re
from typing import TypeGuard
from urllib.parse import quote

__all__ = ["check_name", "is_name", "stream_subjects", "subject_of"]

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_EMPTY_TOKEN = "%"


def is_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` is usable as a stream, consumer or service name."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(what: str, value: object) -> str:
    """``value`` if it is usable as a stream or consumer name, else `ValueError` naming ``what``."""
    if not is_name(value):
        raise ValueError(
            f"{what} must be a non-empty string of ASCII letters, digits, '-' and '_' "
            f"(it names a JetStream stream or consumer), got {value!r}"
        )
    return value


def stream_subjects(stream: str) -> str:
    """The subjects the stream holds: every subject under ``<stream>.``."""
    return f"{stream}.>"


def subject_of(stream: str, type_name: str) -> str:
    """The subject events of ``type_name`` are published to (see the module docstring)."""
    tokens = (quote(token, safe="-_~") if token else _EMPTY_TOKEN for token in type_name.split("."))
    return ".".join((stream, *tokens))
