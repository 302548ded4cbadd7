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
