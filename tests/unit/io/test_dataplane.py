"""The shared-TUN router's dispatcher, without a TUN: routed by IPv4 destination, never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.io.dataplane import SharedTunRouter

PEER = bytes([198, 51, 100, 10])


class FakeLink:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def send_ip(self, packet: bytes) -> bool:
        self.packets.append(packet)
        return True


def router_with(link: Any) -> SharedTunRouter:
    router = SharedTunRouter()
    router._routes[PEER] = link
    return router


def test_dispatch_routes_by_ipv4_destination() -> None:
    link = FakeLink()
    router = router_with(link)
    packet = bytes([0x45]) + bytes(15) + PEER + b"data"
    router._dispatch(packet)
    router._dispatch(bytes([0x45]) + bytes(15) + bytes([198, 51, 100, 11]))
    router._dispatch(bytes([0x60]) + bytes(15) + PEER + bytes(20))  # IPv6: not routed
    assert link.packets == [packet] and router.unroutable == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_dispatch_never_raises(packet: bytes) -> None:
    link = FakeLink()
    router = router_with(link)
    router._dispatch(packet)
    routed = len(packet) >= 20 and packet[0] >> 4 == 4 and packet[16:20] == PEER
    assert link.packets == ([packet] if routed else [])
    assert router.unroutable == (0 if routed else 1)


class FakeBatchLink(FakeLink):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[bytes]] = []

    def send_ips(self, packets: list[bytes]) -> int:
        self.batches.append(list(packets))
        return len(packets)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "none", "v6", "short"]), min_size=1, max_size=30))
def test_dispatch_many_groups_consecutive_packets_per_link(kinds: list[str]) -> None:
    """One read's packets: each run of consecutive packets for one link is one ``send_ips``
    call, in order; what is not routable is counted as ``_dispatch`` counts it."""
    la, lb = FakeBatchLink(), FakeBatchLink()
    router = SharedTunRouter()
    other = bytes([198, 51, 100, 11])
    router._routes[PEER] = la  # type: ignore[assignment]
    router._routes[other] = lb  # type: ignore[assignment]
    to = {"a": PEER, "b": other, "none": bytes([198, 51, 100, 12])}
    packets = []
    for i, kind in enumerate(kinds):
        if kind == "v6":
            packets.append(bytes([0x60]) + bytes(15) + PEER + bytes(20))
        elif kind == "short":
            packets.append(bytes([0x45, i]))
        else:
            packets.append(bytes([0x45, i]) + bytes(14) + to[kind])
    router._dispatch_many(packets)
    runs: list[tuple[str, list[bytes]]] = []
    for i, kind in enumerate(kinds):
        if kind in ("a", "b"):
            if i and kinds[i - 1] == kind:
                runs[-1][1].append(packets[i])
            else:
                runs.append((kind, [packets[i]]))
    by_link = {"a": la, "b": lb}
    single = len(packets) == 1
    for kind, link in by_link.items():
        want = [run for k, run in runs if k == kind]
        got = [[p] for p in link.packets] + link.batches if single else link.batches
        assert got == want
    assert router.unroutable == sum(kind not in ("a", "b") for kind in kinds)
