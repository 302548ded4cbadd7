"""A side that requires MPPE starts IPCP/IPV6CP only after CCP is up, as pppd does.

Found against the real pppd (VM full-stack tests): pppd with ``require-mppe-128`` answers an
IPCP Configure-Request that arrives before its CCP is up with Terminate-Ack (its IPCP is
still Closed), so our client, which used to send IPCP right after authentication, waited a
whole restart interval (3 s) for its retransmission before the link came up.
"""

from __future__ import annotations

from session_harness import SessionPair, client_config, server_config

from pptpkit.ppp.frame import decode_frame
from pptpkit.ppp.packet import Code, Packet
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import MppePolicy

IPCP, IPV6CP, CCP = 0x8021, 0x8057, 0x80FD


def control_log(frames: list[bytes]) -> list[tuple[int, int]]:
    log = []
    for frame in frames:
        protocol, info = decode_frame(frame)
        if protocol in (IPCP, IPV6CP, CCP):
            log.append((protocol, Packet.decode(info).code))
    return log


def first_index(log: list[tuple[int, int]], protocol: int, code: Code) -> int:
    return next(i for i, entry in enumerate(log) if entry == (protocol, code))


def test_client_requiring_mppe_sends_ipcp_only_after_ccp_is_up() -> None:
    pair = SessionPair(
        client_config(mppe=MppePolicy(required=True), ipv6=True),
        server_config(mppe=MppePolicy(required=True)),
    )
    pair.start()
    pair.run(until=1.0)
    sent, received = control_log(pair.wires["cs"].frames), control_log(pair.wires["sc"].frames)
    # The client's CCP cannot be up before it has acked the server's CCP request; only after
    # that may its IPCP/IPV6CP Configure-Requests go out.
    ccp_open_at = first_index(sent, CCP, Code.CONFIGURE_ACK)
    assert (CCP, Code.CONFIGURE_ACK) in received
    assert first_index(sent, IPCP, Code.CONFIGURE_REQUEST) > ccp_open_at
    assert first_index(sent, IPV6CP, Code.CONFIGURE_REQUEST) > ccp_open_at
    # No restart interval was lost: everything happened at virtual time 0.
    up = pair.link_up("client")
    assert up is not None and up.mppe == "MPPE 128-bit stateless"
    assert not [p for p, c in received if p == IPCP and c == Code.TERMINATE_ACK]


def test_server_requiring_mppe_keeps_early_ipcp_until_ccp_is_up() -> None:
    # A client that does not require MPPE starts IPCP at once.  A server that requires it
    # negotiates IPCP only after CCP, as pppd does, but keeps the early Configure-Request and
    # answers it then, instead of a Terminate-Ack that would cost the client a restart interval.
    pair = SessionPair(client_config(mppe=MppePolicy()), server_config(mppe=MppePolicy(required=True)))
    pair.start()
    # Well inside the first restart interval (3 s): answered by a Terminate-Ack, the client's
    # IPCP would wait that long before asking again.
    pair.run(until=2.0)
    assert pair.link_up("client") is not None and pair.link_up("server") is not None
    from_server = control_log(pair.wires["sc"].frames)
    assert (IPCP, Code.TERMINATE_ACK) not in from_server
    assert first_index(from_server, IPCP, Code.CONFIGURE_REQUEST) > first_index(
        from_server, CCP, Code.CONFIGURE_ACK
    )
    assert first_index(from_server, IPCP, Code.CONFIGURE_ACK) > first_index(
        from_server, CCP, Code.CONFIGURE_ACK
    )


def test_held_ncps_open_once_even_if_ccp_renegotiates() -> None:
    pair = SessionPair(
        client_config(mppe=MppePolicy(required=True)), server_config(mppe=MppePolicy(required=True))
    )
    pair.start()
    pair.run(until=1.0)
    assert pair.link_up("client") is not None
    ipcp_requests = control_log(pair.wires["cs"].frames).count((IPCP, Code.CONFIGURE_REQUEST))
    # The server renegotiates CCP (RFC 1661: a Configure-Request in Opened restarts it).
    request = Packet(code=Code.CONFIGURE_REQUEST, identifier=99, data=bytes((18, 6, 1, 0, 0, 0x40)))
    client: PppSession = pair.client
    client.receive_frame(b"\x80\xfd" + request.encode(), pair.now)
    pair.run(until=2.0)
    assert control_log(pair.wires["cs"].frames).count((IPCP, Code.CONFIGURE_REQUEST)) == ipcp_requests
    assert client._ipcp is not None and client._ipcp.is_open


def test_without_required_mppe_ipcp_starts_with_ccp() -> None:
    pair = SessionPair(client_config(mppe=MppePolicy()), server_config(mppe=MppePolicy()))
    pair.start()
    sent = control_log(pair.wires["cs"].frames)
    # pppd without require-mppe opens every NCP together; so do we.
    assert first_index(sent, IPCP, Code.CONFIGURE_REQUEST) < first_index(sent, CCP, Code.CONFIGURE_ACK)
