"""IPCP server/client pairs: address assignment, DNS/NBNS, rejected options."""

from __future__ import annotations

from ipaddress import IPv4Address as A

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ppp_harness import Pair

from pptpkit.errors import ConfigError
from pptpkit.ppp.ipcp import IpcpConfig, IpcpEngine, IpcpOption
from pptpkit.ppp.packet import Code, Option, Packet, decode_options

SERVER = A("198.51.100.1")
CLIENT = A("198.51.100.2")
DNS1, DNS2 = A("192.0.2.53"), A("192.0.2.54")


def run(server: IpcpEngine, client: IpcpEngine) -> Pair:
    pair = Pair(server, client)
    for eng in (server, client):
        eng.open(0)
        eng.up(0)
    pair.run(until=5)
    return pair


def test_server_assigns_address_and_dns() -> None:
    calls: list[int] = []

    def pool() -> A:
        calls.append(1)
        return CLIENT

    server = IpcpEngine(IpcpConfig(local_address=SERVER, peer_address=pool, dns_servers=(DNS1, DNS2)))
    client = IpcpEngine(IpcpConfig(request_dns=True))
    pair = run(server, client)
    assert server.is_open and client.is_open
    assert client.result is not None and server.result is not None
    assert client.result.local_address == CLIENT and client.result.peer_address == SERVER
    assert client.result.dns_servers == (DNS1, DNS2)
    assert server.result.peer_address == CLIENT and server.result.local_address == SERVER
    assert calls == [1]
    naks = [Packet.decode(p) for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_NAK]
    assert len(naks) == 1
    assert decode_options(naks[0].data) == [
        Option(type=3, data=CLIENT.packed),
        Option(type=129, data=DNS1.packed),
        Option(type=131, data=DNS2.packed),
    ]


def test_server_naks_a_wrong_address() -> None:
    server = IpcpEngine(IpcpConfig(local_address=SERVER, peer_address=CLIENT))
    client = IpcpEngine(IpcpConfig(local_address=A("203.0.113.9")))
    pair = run(server, client)
    # The client insists on its configured address; the server Naks until max-failure, then
    # rejects the option and the client ends up without an acked address of its own.
    naks = [p for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_NAK]
    assert len(naks) == 5
    assert [p for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_REJECT]
    assert client.is_open


def test_dns_rejected_when_server_has_none_and_nbns() -> None:
    server = IpcpEngine(IpcpConfig(local_address=SERVER, peer_address=CLIENT, nbns_servers=(DNS1,)))
    client = IpcpEngine(IpcpConfig(request_dns=True, request_nbns=True))
    pair = run(server, client)
    rejects = [Packet.decode(p) for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_REJECT]
    rejected_types = {o.type for r in rejects for o in decode_options(r.data)}
    assert {129, 131, 132} <= rejected_types and 130 not in rejected_types
    assert client.result is not None
    assert client.result.dns_servers == () and client.result.nbns_servers == (DNS1,)
    assert client.result.local_address == CLIENT


def test_deprecated_and_vj_options_rejected() -> None:
    eng = IpcpEngine(IpcpConfig(local_address=SERVER, peer_address=CLIENT))
    eng.open(0)
    eng.up(0)
    eng.packets_to_send()
    odd = [Option(type=1, data=bytes(8)), Option(type=2, data=b"\x00\x2d\x0f\x01")]
    data = b"".join(o.encode() for o in [Option(type=3, data=CLIENT.packed), *odd])
    eng.receive_packet(Packet(code=1, identifier=4, data=data).encode(), 0)
    reply = Packet.decode(eng.packets_to_send()[0])
    assert reply.code == Code.CONFIGURE_REJECT and decode_options(reply.data) == odd


def test_peer_omitting_address_gets_a_hint_once() -> None:
    eng = IpcpEngine(IpcpConfig(local_address=SERVER, peer_address=CLIENT))
    eng.open(0)
    eng.up(0)
    eng.packets_to_send()
    eng.receive_packet(Packet(code=1, identifier=1).encode(), 0)
    nak = Packet.decode(eng.packets_to_send()[0])
    assert nak.code == Code.CONFIGURE_NAK and decode_options(nak.data) == [Option(type=3, data=CLIENT.packed)]
    eng.receive_packet(Packet(code=1, identifier=2).encode(), 0)
    assert Packet.decode(eng.packets_to_send()[0]).code == Code.CONFIGURE_ACK


def test_no_pool_accepts_peer_address_and_rejects_zero() -> None:
    eng = IpcpEngine(IpcpConfig(local_address=SERVER))
    eng.open(0)
    eng.up(0)
    eng.packets_to_send()
    eng.receive_packet(Packet(code=1, identifier=1, data=Option(type=3, data=bytes(4)).encode()).encode(), 0)
    assert Packet.decode(eng.packets_to_send()[0]).code == Code.CONFIGURE_REJECT
    eng.receive_packet(
        Packet(code=1, identifier=2, data=Option(type=3, data=CLIENT.packed).encode()).encode(), 0
    )
    assert Packet.decode(eng.packets_to_send()[0]).code == Code.CONFIGURE_ACK


def test_pool_returning_none_behaves_like_no_pool() -> None:
    server = IpcpEngine(IpcpConfig(local_address=SERVER, peer_address=lambda: None))
    client = IpcpEngine(IpcpConfig(local_address=CLIENT))
    run(server, client)
    assert server.result is not None and server.result.peer_address == CLIENT


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        IpcpConfig(local_address=A(0))
    with pytest.raises(ConfigError):
        IpcpConfig(dns_servers=(DNS1, DNS2, DNS1))
    assert int(IpcpOption.PRIMARY_DNS) == 129


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([1, 2, 3, 129, 130, 131, 132, 7]), st.binary(max_size=6)), max_size=6),
    st.sampled_from([1, 2, 3, 4]),
    st.binary(max_size=30),
)
def test_fuzz_receive_path(options: list[tuple[int, bytes]], code: int, junk: bytes) -> None:
    eng = IpcpEngine(IpcpConfig(local_address=SERVER, peer_address=CLIENT, dns_servers=(DNS1,)))
    eng.open(0)
    eng.up(0)
    data = b"".join(Option(type=t, data=d).encode() for t, d in options)
    eng.receive_packet(Packet(code=code, identifier=eng._req_id, data=data).encode(), 1)
    eng.receive_packet(junk, 1)
    for out in eng.packets_to_send():
        Packet.decode(out)
