"""Pieces of the built-in server that need no namespace: the shared-TUN dispatcher, the nft
ruleset, address pool exclusion and BuiltinConfig validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.io.link import SharedTunRouter
from pptpkit.vpn.netpolicy import nft_ruleset

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


def test_nft_ruleset_is_self_contained_and_validated() -> None:
    text = nft_ruleset("pptpkit", "pptpkit*")
    assert text.startswith("add table inet pptpkit\ndelete table inet pptpkit\n")
    assert 'oifname "pptpkit*" tcp flags syn / syn,rst tcp option maxseg size set rt mtu' in text
    for table, pattern in (("bad table", "x*"), ("t", 'x"; drop'), ("t", "")):
        with pytest.raises(ValueError):
            nft_ruleset(table, pattern)
