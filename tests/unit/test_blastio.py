"""The blast load generator's I/O helpers: the sampling socket filter, sendmmsg batches, and the
check of a sampled echo against the packet sent."""

from __future__ import annotations

import socket
import struct

import pytest

from pptpkit.crypto.mppe import MppeConfig, MppeDecryptor, MppeEncryptor
from pptpkit.lab.bench.blastio import Batches, EchoCheck, gre_seq, sample_filter, set_filter

_IPV4 = bytes([0x45]) + bytes(19)


def _gre(seq: int | None, payload: bytes = b"x", ack: int | None = None) -> bytes:
    flags = 0x20 | (0x10 if seq is not None else 0)
    version = 0x01 | (0x80 if ack is not None else 0)
    out = struct.pack("!BBHHH", flags, version, 0x880B, len(payload), 7)
    if seq is not None:
        out += struct.pack("!I", seq)
    if ack is not None:
        out += struct.pack("!I", ack)
    return out + payload


def _admitted(shift: int, datagrams: list[bytes]) -> list[bytes]:
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with rx, tx:
        set_filter(rx, sample_filter(shift))
        rx.setblocking(False)
        for d in datagrams:
            tx.send(d)
        out = []
        while True:
            try:
                out.append(rx.recv(4096))
            except BlockingIOError:
                return out


@pytest.mark.parametrize("shift", [0, 3, 4])
def test_sample_filter_admits_numbers_with_low_bits_zero(shift: int) -> None:
    # A 24-octet IPv4 header (one option word) checks that the GRE offset follows the IHL.
    long_ip = bytes([0x46]) + bytes(23)
    datagrams = [(_IPV4 if n % 2 else long_ip) + _gre(0x10000 + n) for n in range(40)]
    datagrams.append(_IPV4 + _gre(None, b"", ack=5))  # acknowledgement only: never admitted
    got = [gre_seq(d[(d[0] & 0x0F) * 4:]) for d in _admitted(shift, datagrams)]
    assert got == [0x10000 + n for n in range(40) if n % (1 << shift) == 0]


def test_gre_seq() -> None:
    assert gre_seq(_gre(0xDEADBEEF)) == 0xDEADBEEF
    assert gre_seq(_gre(None, b"", ack=1)) is None
    assert gre_seq(b"\x30\x01") is None


@pytest.mark.parametrize("named", [True, False], ids=["named", "bound"])
def test_batches_send_a_slice_in_one_call(named: bool) -> None:
    # "bound": the packet path's socket is bound to its device, so its messages carry no
    # address (a connected datagram socket stands in for it here, without root).
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2.0)
        port = rx.getsockname()[1]
        name = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1"))
        if not named:
            tx.connect(rx.getsockname())
            name = b""
        packets = [bytes([i]) * (100 + i) for i in range(6)]
        batches = Batches(packets, name)
        assert batches.count == 6
        assert batches.send(tx.fileno(), 1, 4) == 3
        assert [rx.recv(4096) for _ in range(3)] == packets[1:4]


def _inner(tag: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, tag & 0xFFFF, 0, 64, 253, 0,
                         socket.inet_aton("198.51.100.2"), socket.inet_aton("198.51.100.1"))
    return header + struct.pack("!Q", tag) + bytes(32)


def _echo(inner: bytes) -> bytes:
    return inner[:12] + inner[16:20] + inner[12:16] + inner[20:]


def test_echo_check_accepts_the_echo_and_refuses_anything_else() -> None:
    cfg = MppeConfig(start_key=bytes(range(16)))
    enc, dec = MppeEncryptor(cfg), MppeDecryptor(cfg)
    check = EchoCheck(dec, _inner, 100)
    bodies = [enc.encrypt(0x21, _echo(_inner(i))) for i in range(20)]
    frame = b"\xff\x03\x00\xfd"
    check.check(_gre(1, frame + bodies[0], ack=3), 0)
    check.check(_gre(9, frame + bodies[8]), 8)          # a jump of several key changes
    assert (check.checked, check.failed) == (2, 0)
    check.check(_gre(11, frame + bodies[10]), 11)       # the echo of another packet
    assert check.failed == 1
    not_swapped = enc.encrypt(0x21, _inner(12))
    check.check(_gre(13, frame + bodies[11][:-1] + b"\x00"), 11)  # corrupted
    check.check(_gre(14, frame + not_swapped), 12)       # addresses not swapped
    check.check(_gre(15, b"\xff\x03\x00\x21" + _echo(_inner(14))), 14)  # not encrypted
    assert (check.checked, check.failed) == (6, 4)
