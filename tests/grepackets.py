"""Raw GRE datagrams as a raw socket returns them (IPv4 header on), for demultiplexer tests."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable


def gre(call_id: int, payload: bytes = b"", *, seq: int | None = None, version: int = 1,
        key: bool = True, protocol: int = 0x880B) -> bytes:
    flags = (0x20 if key else 0) | (0x10 if seq is not None else 0)
    head = struct.pack("!BBHHH", flags, version, protocol, len(payload), call_id)
    if seq is not None:
        head += struct.pack("!I", seq)
    return head + payload


def ipv4(src: str, gre_packet: bytes, *, ihl: int = 5) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(gre_packet), 0, 0, 64, 47, 0,
        socket.inet_aton(src), socket.inet_aton("192.0.2.1"),
    )
    return header + b"\x01" * (ihl * 4 - 20) + gre_packet


def collector() -> tuple[list[tuple[bytes, float]], Callable[[bytes, float], None]]:
    got: list[tuple[bytes, float]] = []
    return got, lambda data, now: got.append((data, now))
