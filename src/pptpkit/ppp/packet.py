"""Control packets of the LCP family (LCP, IPCP, IPV6CP, CCP): Code, Identifier, Length, Data.

A packet keeps its data as raw bytes whatever the code, so an unknown code can be sent back
in a Code-Reject unchanged.  Configuration options are a list of type/length/value entries;
an option we do not understand keeps its raw bytes so it can be sent back in a
Configure-Reject byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from pptpkit.errors import DecodeError

HEADER: Final = struct.Struct("!BBH")
HEADER_SIZE: Final = HEADER.size
#: More options than this in one packet is an attack or a bug: a real Configure-Request has
#: fewer than 20.  Bounds the per-packet work of judging options.
MAX_OPTIONS: Final = 64
MAX_OPTION_DATA: Final = 253


class Code(IntEnum):
    """Packet codes (open enum).  1-7 are common to every protocol of the family; 8-13 are
    LCP only (12/13 from RFC 1570); 14/15 are CCP's Reset-Request/Reset-Ack (RFC 1962)."""

    CONFIGURE_REQUEST = 1
    CONFIGURE_ACK = 2
    CONFIGURE_NAK = 3
    CONFIGURE_REJECT = 4
    TERMINATE_REQUEST = 5
    TERMINATE_ACK = 6
    CODE_REJECT = 7
    PROTOCOL_REJECT = 8
    ECHO_REQUEST = 9
    ECHO_REPLY = 10
    DISCARD_REQUEST = 11
    IDENTIFICATION = 12
    TIME_REMAINING = 13
    RESET_REQUEST = 14
    RESET_ACK = 15


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    code: int
    identifier: int
    data: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(self.code, self.identifier, HEADER_SIZE + len(self.data)) + self.data

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Packet:
        """Parse one packet.  Bytes past Length are padding and ignored (RFC 1661 5)."""
        # Plain indexing and one slice, not a Reader: every control packet of every call setup
        # comes through here, and the Reader's per-field method calls were most of its cost.
        size = len(data)
        if size < HEADER_SIZE:
            raise DecodeError(f"truncated: control packet of {size} bytes, below the 4-byte header")
        code, identifier, length = HEADER.unpack_from(data)
        if length < HEADER_SIZE:
            raise DecodeError(f"control packet Length {length} below the 4-byte header")
        if length > size:
            raise DecodeError(f"control packet Length {length} overruns the {size}-byte frame")
        return cls(code=code, identifier=identifier, data=bytes(data[HEADER_SIZE:length]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One configuration option; ``data`` excludes the type and length octets."""

    type: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFF or len(self.data) > MAX_OPTION_DATA:
            raise ValueError("option type or data size out of range")

    def encode(self) -> bytes:
        return bytes((self.type, len(self.data) + 2)) + self.data


def decode_options(data: bytes | bytearray | memoryview) -> list[Option]:
    """The options of a Configure-Request/Ack/Nak/Reject.

    A length below 2 or past the end of the packet is a :class:`DecodeError`, as is a packet
    with more than :data:`MAX_OPTIONS` options.
    """
    # Indexing instead of a Reader, for the same reason as Packet.decode.
    buf = bytes(data)
    end = len(buf)
    pos = 0
    options: list[Option] = []
    while pos < end:
        if len(options) >= MAX_OPTIONS:
            raise DecodeError(f"more than {MAX_OPTIONS} options in one packet")
        if pos + 2 > end:
            raise DecodeError(f"truncated: option header at offset {pos}, {end - pos} byte left")
        kind = buf[pos]
        length = buf[pos + 1]
        if length < 2:
            raise DecodeError(f"option {kind} has length {length} below 2")
        if pos + length > end:
            raise DecodeError(f"truncated: option {kind} of length {length} at offset {pos}, "
                              f"{end - pos} bytes left")
        options.append(Option(type=kind, data=buf[pos + 2:pos + length]))
        pos += length
    return options


def encode_options(options: Iterable[Option]) -> bytes:
    return b"".join(o.encode() for o in options)
