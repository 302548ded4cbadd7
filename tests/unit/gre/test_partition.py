"""Call-ID partitions and their BPF filter: the ranges cover every ID once, and on a real raw
socket (root, in a namespace of its own) each GRE packet reaches exactly one worker's socket."""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
from collections.abc import Iterator

import pytest

from pptpkit.errors import ConfigError
from pptpkit.gre.partition import gre_partition_filter, partition, partitions
from pptpkit.io.gresock import attach_filter
from pptpkit.lab.netns import NetnsLab, inside

IPPROTO_GRE = 47


def test_partitions_cover_every_id_exactly_once() -> None:
    for n in (1, 2, 3, 7, 64):
        parts = partitions(n)
        assert parts[0].low == 0 and parts[-1].high == 0xFFFF
        for a, b in itertools.pairwise(parts):
            assert b.low == a.high + 1
        assert all(p.high >= p.low for p in parts)
    assert partition(0, 2).allocatable_low == 1
    assert 40000 in partition(1, 2) and 40000 not in partition(0, 2)


def test_partition_rejects_bad_counts() -> None:
    for index, count in ((0, 0), (0, 65), (2, 2), (-1, 2)):
        with pytest.raises(ConfigError):
            partition(index, count)


def test_program_is_whole_instructions() -> None:
    prog = gre_partition_filter(partition(1, 4))
    assert len(prog) % 8 == 0 and len(prog) // 8 == 14
    # Only worker 0 takes what is not PPTP's GRE by default.
    assert gre_partition_filter(partition(0, 2))[-4:] != b"\0\0\0\0"
    assert gre_partition_filter(partition(1, 2))[-4:] == b"\0\0\0\0"


def _gre(call_id: int, *, version: int = 1, key: bool = True, proto: int = 0x880B) -> bytes:
    flags = (0x20 if key else 0) | 0x10  # K and S
    header = struct.pack("!BBH", flags, version, proto)
    if key:
        header += struct.pack("!HH", 4, call_id)
    return header + struct.pack("!I", 1) + b"\xff\x03\x00\x21"


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace and raw sockets")
    with NetnsLab("bpf") as lab:
        ns = lab.add_namespace("w")
        lab.ip(ns, "link", "set", "lo", "up")
        yield ns


def _received(sock: socket.socket) -> list[int]:
    """Call IDs (or -1 for a packet without a key) queued on ``sock``."""
    out = []
    while select.select([sock], [], [], 0.2)[0]:
        data = sock.recv(65535)
        ihl = (data[0] & 0x0F) * 4
        out.append(struct.unpack_from("!H", data, ihl + 6)[0] if data[ihl] & 0x20 else -1)
    return out


def test_each_packet_reaches_exactly_one_worker(namespace: str) -> None:
    with inside(namespace):
        workers = []
        for i in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
            attach_filter(s, gre_partition_filter(partition(i, 3)))
            workers.append(s)
        sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
        attach_filter(sender, struct.pack("=HBBI", 0x06, 0, 0, 0))  # the sender hears nothing
        try:
            ids = [0, 1, 21845, 21846, 43690, 43691, 65535, 30000, 50000]
            for call_id in ids:
                sender.sendto(_gre(call_id), ("127.0.0.1", 0))
            # Not PPTP: no key, GRE version 0, another protocol type -> worker 0 only.
            sender.sendto(_gre(7, key=False), ("127.0.0.1", 0))
            sender.sendto(_gre(40000, version=0), ("127.0.0.1", 0))
            sender.sendto(_gre(40000, proto=0x0800), ("127.0.0.1", 0))
            got = [_received(s) for s in workers]
        finally:
            for s in [*workers, sender]:
                s.close()
    parts = partitions(3)
    for i, part in enumerate(parts):
        assert sorted(c for c in got[i] if c >= 0 and (i or c in part)) == sorted(c for c in ids if c in part)
    assert got[0].count(-1) == 1 and got[0].count(40000) == 2
    assert len(got[1]) == len([c for c in ids if c in parts[1]])
    assert len(got[2]) == len([c for c in ids if c in parts[2]])
    assert sum(len(g) for g in got) == len(ids) + 3
