"""TunDevice's offload write queue without a kernel TUN: a pipe stands in for the descriptor."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Iterator

import pytest
from test_offload import flow4

from pptpkit.io.offload import VNET_HDR_SIZE, ZERO_VNET_HDR, VnetHeader
from pptpkit.io.tun import TunDevice


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    os.close(r)


def drain(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_writes_are_queued_and_merged_once_per_iteration(pipe: tuple[int, int]) -> None:
    r, w = pipe
    dev = TunDevice(w, "fake0", offload=True)
    segs = flow4(5)

    async def main() -> None:
        for s in segs:
            assert dev.write(s)
        assert drain(r) == b""  # nothing written before the loop turns
        await asyncio.sleep(0)
        raw = drain(r)
        hdr = VnetHeader.decode(raw)
        assert hdr.gso_type == 1 and hdr.gso_size == 1000
        assert raw[VNET_HDR_SIZE + hdr.hdr_len :] == b"".join(s[hdr.hdr_len :] for s in segs)

    asyncio.run(main())
    assert (dev.stats.writes, dev.stats.sent) == (1, 5)
    dev.close()


def test_refused_merged_write_falls_back_to_segments(pipe: tuple[int, int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = pipe
    dev = TunDevice(w, "fake0", offload=True)
    real = os.writev

    def picky(fd: int, bufs: list[bytes]) -> int:
        if bufs[0] != ZERO_VNET_HDR:
            raise OSError(22, "Invalid argument")
        return real(fd, bufs)

    # The device looks os.writev up at each flush.
    monkeypatch.setattr(os, "writev", picky)
    segs = flow4(4)
    for s in segs:
        dev.write(s)  # no running loop: written at once
    raw = drain(r)
    expected = b"".join(ZERO_VNET_HDR + s for s in segs)
    # Without a loop each write goes out alone; queue them on a loop to exercise the fallback.
    assert raw == expected

    async def main() -> None:
        for s in segs:
            dev.write(s)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert drain(r) == expected
    assert dev.stats.gso_write_fallbacks == 1 and dev.stats.sent == 8 and dev.stats.write_errors == 0
    dev.close()
    assert not dev.write(segs[0]) and dev.stats.write_errors == 1


def test_a_super_segment_reaches_on_packets_as_one_list() -> None:
    """The batch reader: a TSO read's segments arrive as one list (what ``segment`` cuts), a
    plain read as a one-element list, in read order; ``on_packet`` is not called.  A datagram
    socket stands in for the descriptor (one read, one packet)."""
    import socket

    from test_offload import ACK, PSH, gso_packet, pattern, tcp4

    from pptpkit.io.offload import GsoType, VnetFlags, segment

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    hl = 20 + 32
    pkt = gso_packet(False, pattern(20 * 1448), ACK | PSH)
    hdr = VnetHeader(flags=VnetFlags.NEEDS_CSUM, gso_type=GsoType.TCPV4, hdr_len=hl, gso_size=1448,
                     csum_start=20, csum_offset=16)
    plain = tcp4(1, b"ack only")
    a.send(ZERO_VNET_HDR + plain)
    a.send(hdr.encode() + pkt)
    a.send(ZERO_VNET_HDR + plain)
    dev = TunDevice(b.fileno(), "fake0", offload=True)
    singles: list[bytes] = []
    got = _read_lists(dev, 3, singles.append)
    assert got == [[plain], segment(hdr, pkt), [plain]]
    assert len(got[1]) == 20 and singles == []
    assert dev.stats.received == 22 and dev.stats.reads == 3
    a.close()
    b.close()


def _read_lists(dev: TunDevice, want: int, on_packet: Callable[[bytes], object]) -> list[list[bytes]]:
    """Start ``dev`` with a batch receiver and collect ``want`` reads' lists (or give up)."""
    got: list[list[bytes]] = []

    async def main() -> None:
        dev.start(on_packet, on_packets=got.append)
        for _ in range(100):
            if len(got) == want:
                break
            await asyncio.sleep(0.01)
        dev.stop()

    asyncio.run(main())
    return got


def test_the_plain_batch_reader_gives_one_element_lists() -> None:
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    for n in range(3):
        a.send(bytes([0x45, n]) + bytes(18))
    dev = TunDevice(b.fileno(), "fake0")
    got = _read_lists(dev, 3, lambda p: None)
    assert got == [[bytes([0x45, n]) + bytes(18)] for n in range(3)]
    a.close()
    b.close()


def test_write_many_is_write_of_each_packet(pipe: tuple[int, int]) -> None:
    """The receive path's batch sink: a run joins the queue in one step and is merged and
    written exactly as the same packets written one by one; a run that would overfill the
    queue goes packet by packet (flushed when full, as write does)."""
    from pptpkit.io.offload import MAX_QUEUE

    r, w = pipe
    segs = flow4(6)
    outputs = []
    for batched in (False, True):
        dev = TunDevice(w, "fake0", offload=True)

        async def main(dev: TunDevice = dev, batched: bool = batched) -> None:
            if batched:
                dev.write_many(segs[:4])
                dev.write_many(segs[4:])
            else:
                for s in segs:
                    dev.write(s)
            assert drain(r) == b""  # queued: flushed once the loop turns
            await asyncio.sleep(0)

        asyncio.run(main())
        outputs.append((drain(r), dataclasses.astuple(dev.stats)))
    assert outputs[0] == outputs[1] and outputs[0][1][1] == 6  # sent

    dev = TunDevice(w, "fake0", offload=True)

    tiny = bytes([0x45]) + bytes(19)  # not TCP: written alone (and small: the pipe holds them all)

    async def overfill() -> None:
        dev.write_many([tiny] * (MAX_QUEUE - 1))
        assert len(dev._coalescer) == MAX_QUEUE - 1
        dev.write_many([tiny, tiny])  # the first fills the queue: flushed at once, the second queued
        assert len(dev._coalescer) == 1
        await asyncio.sleep(0)

    asyncio.run(overfill())
    drain(r)
    assert dev.stats.sent == MAX_QUEUE + 1
    plain = TunDevice(w, "fake1")
    plain.write_many(segs[:3])
    assert drain(r) == b"".join(segs[:3]) and plain.stats.sent == 3
    dev.fd = plain.fd = None  # the pipe is the fixture's to close
    plain.write_many(segs[:2])
    dev.write_many(segs[:2])
    assert plain.stats.write_errors == dev.stats.write_errors == 2
