"""The datagrams between a member and its call manager.

One type octet, then the body.  ``FRAME`` bodies are PPP frames (at most :data:`MAX_FRAME`, the
GRE payload limit, so anything a member sends fits one GRE packet); the others are a JSON object
(at most :data:`MAX_JSON` octets).  JSON rather than a packed layout because these messages are
rare (one per call set-up or end) and a newer manager may add fields an older member ignores.
:func:`decode_message` checks everything and raises only :class:`~pptpkit.errors.DecodeError`:
both ends treat the other as untrusted input.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pptpkit.errors import DecodeError
from pptpkit.gre.packet import MAX_PAYLOAD

__all__ = [
    "MAX_FRAME",
    "MAX_JSON",
    "MAX_QUEUED",
    "Message",
    "MsgType",
    "decode_message",
    "encode_message",
]

MAX_FRAME: Final = MAX_PAYLOAD
MAX_JSON: Final = 4096
#: Datagrams either end may have queued towards the other before frames are dropped (the
#: frames are PPP: dropping is what a congested link does, blocking would stall the sender).
MAX_QUEUED: Final = 256


class MsgType(enum.IntEnum):
    FRAME = 1
    OPEN = 2
    OPENED = 3
    FAILED = 4
    CLOSED = 5
    HANGUP = 6


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    frame: bytes = b""
    data: Mapping[str, Any] = field(default_factory=dict)


_JSON_TYPES: Final = {MsgType.OPEN, MsgType.OPENED, MsgType.FAILED, MsgType.CLOSED}
#: The fields each JSON message must carry, with their types (extra fields are ignored so a
#: newer manager can add some).
_REQUIRED: Final[dict[MsgType, dict[str, tuple[type, ...]]]] = {
    MsgType.OPEN: {},
    MsgType.OPENED: {"call_id": (int,), "peer_call_id": (int,), "peer_window": (int,),
                     "connect_speed": (int,), "peer": (dict,)},
    MsgType.FAILED: {"kind": (str,), "reason": (str,)},
    MsgType.CLOSED: {"reason": (str,), "by": (str,), "connection_lost": (bool,)},
}


def encode_message(msg: Message) -> bytes:
    if msg.type is MsgType.FRAME:
        if len(msg.frame) > MAX_FRAME:
            raise ValueError(f"frame of {len(msg.frame)} octets is over {MAX_FRAME}")
        return bytes([MsgType.FRAME]) + msg.frame
    if msg.type is MsgType.HANGUP:
        return bytes([MsgType.HANGUP])
    body = json.dumps(dict(msg.data), separators=(",", ":")).encode()
    if len(body) > MAX_JSON:
        raise ValueError("message body too long")
    return bytes([msg.type]) + body


def decode_message(data: bytes) -> Message:
    """One datagram -> :class:`Message`; :class:`DecodeError` for anything malformed."""
    if not data:
        raise DecodeError("empty message")
    try:
        kind = MsgType(data[0])
    except ValueError:
        raise DecodeError(f"unknown message type {data[0]}") from None
    body = data[1:]
    if kind is MsgType.FRAME:
        if not body or len(body) > MAX_FRAME:
            raise DecodeError(f"frame length {len(body)} not in 1..{MAX_FRAME}")
        return Message(kind, frame=bytes(body))
    if kind is MsgType.HANGUP:
        if body:
            raise DecodeError("HANGUP carries no body")
        return Message(kind)
    if len(body) > MAX_JSON:
        raise DecodeError("message body too long")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DecodeError(f"{kind.name}: body is not JSON") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{kind.name}: body is not an object")
    for name, types in _REQUIRED[kind].items():
        value = obj.get(name)
        # bool is an int subclass; a count or ID must not be True/False.
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            raise DecodeError(f"{kind.name}: field {name!r} missing or of the wrong type")
    if kind is MsgType.OPENED:
        for name in ("call_id", "peer_call_id", "peer_window"):
            if not 0 <= obj[name] <= 0xFFFF:
                raise DecodeError(f"OPENED: {name} out of range")
    return Message(kind, data=obj)

