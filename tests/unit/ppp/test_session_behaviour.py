"""PppSession behaviour: failures and their outcomes, MPPE under loss, echo, renegotiation,
Protocol-Reject, IPV6CP, CCP refusal, the first frames pppd sees, and fuzzing."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_harness import (
    SERVER_NAME,
    SessionPair,
    client_config,
    ipv4_packet,
    ipv6_packet,
    server_config,
)

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.errors import ConfigError
from pptpkit.ppp.frame import decode_frame, frame_header
from pptpkit.ppp.packet import Code, Packet, decode_options
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import (
    Authenticated,
    AuthenticationFailed,
    Ipv6Up,
    LinkDown,
    LinkUp,
    MppePolicy,
    NetworkDown,
    Outcome,
    Phase,
    PhaseChanged,
    SessionConfig,
    SessionRole,
)

ALL_METHODS = list(AuthMethod)


def up_pair(**kw: object) -> SessionPair:
    client_kw = {k[2:]: v for k, v in kw.items() if k.startswith("c_")}
    server_kw = {k[2:]: v for k, v in kw.items() if k.startswith("s_")}
    other = {k: v for k, v in kw.items() if not k.startswith(("c_", "s_"))}
    method = server_kw.pop("method", AuthMethod.MSCHAP_V2)
    pair = SessionPair(client_config(**client_kw), server_config(method, **server_kw), **other)  # type: ignore[arg-type]
    pair.start()
    pair.run(until=5.0)
    return pair


def frames_of(wire: list[bytes], protocol: int) -> list[Packet]:
    out = []
    for f in wire:
        proto, info = decode_frame(f)
        if proto == protocol:
            out.append(Packet.decode(info))
    return out


# --- authentication failures -------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
def test_wrong_password_ends_both_sides(method: AuthMethod) -> None:
    pair = SessionPair(client_config(password="wrong"), server_config(method))
    pair.start()
    pair.run(until=40.0)
    server, client = pair.link_down("server"), pair.link_down("client")
    assert server is not None and client is not None
    assert (server.outcome, server.exit_status) == (Outcome.PEER_AUTH_FAILED, 11)
    assert (client.outcome, client.exit_status) == (Outcome.AUTH_TOPEER_FAILED, 19)
    assert server.reason == "Authentication failed"
    assert client.reason == "Failed to authenticate ourselves to peer"
    assert pair.of_type("server", AuthenticationFailed)[0].we_authenticated_peer
    assert not pair.of_type("client", AuthenticationFailed)[0].we_authenticated_peer
    # Never reached the network phase: no NCP packet left either side.
    phases = [e.phase for e in pair.of_type("server", PhaseChanged)]
    assert Phase.NETWORK not in phases
    for wire in pair.wires.values():
        assert not any(decode_frame(f)[0] in (0x8021, 0x80FD, 0x8057) for f in wire.frames)
    # The reason travels in the server's LCP Terminate-Request.
    terms = [p for p in frames_of(pair.wires["sc"].frames, 0xC021) if p.code == Code.TERMINATE_REQUEST]
    assert terms and terms[0].data == b"Authentication failed"


def test_unknown_user() -> None:
    pair = SessionPair(
        client_config(username="mallory"),
        server_config(AuthMethod.MSCHAP_V2, secrets=StaticSecrets({("alice", SERVER_NAME): "x"})),
    )
    pair.start()
    pair.run(until=40.0)
    server, client = pair.link_down("server"), pair.link_down("client")
    assert server is not None and server.outcome is Outcome.PEER_AUTH_FAILED
    assert client is not None and client.outcome is Outcome.AUTH_TOPEER_FAILED
    assert pair.of_type("server", AuthenticationFailed)[0].username == "mallory"


def test_mschapv2_server_that_cannot_prove_the_password_is_dropped() -> None:
    def corrupt_success(direction: str, frame: bytes) -> bytes:
        proto, info = decode_frame(frame)
        if direction == "sc" and proto == 0xC223 and info[0] == 3:  # CHAP Success "S=<40 hex>"
            text = bytes(info)
            i = text.index(b"S=") + 2
            flipped = b"0" if text[i : i + 1] != b"0" else b"1"
            return frame[: len(frame) - len(info)] + text[:i] + flipped + text[i + 1 :]
        return frame

    pair = SessionPair(client_config(), server_config(AuthMethod.MSCHAP_V2), tamper=corrupt_success)
    pair.start()
    pair.run(until=40.0)
    client, server = pair.link_down("client"), pair.link_down("server")
    assert client is not None and client.outcome is Outcome.AUTH_TOPEER_FAILED
    assert pair.of_type("client", AuthenticationFailed)
    assert pair.link_up("client") is None
    assert server is not None and server.outcome is Outcome.PEER_TERMINATED
    assert server.reason == "Failed to authenticate ourselves to peer"


# --- MPPE policy --------------------------------------------------------------------------------


def test_peer_refusing_required_mppe_terminates_both_with_reason() -> None:
    pair = SessionPair(client_config(mppe=MppePolicy.nomppe()), server_config(mppe=MppePolicy(required=True)))
    pair.start()
    pair.run(until=30.0)
    server, client = pair.link_down("server"), pair.link_down("client")
    refused = "MPPE required but peer refused"
    assert server == LinkDown(outcome=Outcome.MPPE_REFUSED, reason=refused, exit_status=10)
    assert client is not None and client.outcome is Outcome.PEER_TERMINATED
    assert client.reason == "MPPE required but peer refused"


def test_no_clear_data_while_required_mppe_is_not_on() -> None:
    def drop_ccp(direction: str, frame: bytes) -> bytes | None:
        return None if decode_frame(frame)[0] == 0x80FD else frame

    pair = SessionPair(
        client_config(mppe=MppePolicy(required=True)),
        server_config(mppe=MppePolicy(required=True)),
        tamper=drop_ccp,
    )
    pair.start()
    pair.run(until=5.0)
    # Requiring MPPE, both sides hold IPCP back until CCP is up (as pppd does).
    assert pair.client.phase is Phase.NETWORK and pair.client._ipcp is not None
    assert not pair.client._ipcp.is_open
    assert pair.send("client", ipv4_packet(1)) is None
    assert pair.send("server", ipv4_packet(2)) is None
    # A clear IP frame from the peer is refused too.
    assert pair.server.receive_frame(b"\x21" + ipv4_packet(3), pair.now) is None
    assert pair.server.stats.dropped["clear_data_refused"] == 1
    pair.run(until=60.0)  # CCP gives up: nothing came back, which is no refusal (a retry may work)
    down = pair.link_down("client")
    assert down is not None and down.outcome is Outcome.NEGOTIATION_FAILED and down.exit_status == 10
    assert down.reason == "no answer to CCP Configure-Request"
    for wire in pair.wires.values():
        assert not any(decode_frame(f)[0] in (0x21, 0x57, 0xFD) for f in wire.frames)
        assert not wire.delivered


def test_required_mppe_drops_clear_frames_after_link_up() -> None:
    pair = up_pair(c_mppe=MppePolicy(required=True), s_mppe=MppePolicy(required=True))
    assert pair.link_up("server") is not None
    assert pair.server.receive_frame(b"\xff\x03\x00\x21" + ipv4_packet(9), pair.now) is None
    assert pair.server.stats.dropped["clear_data_refused"] == 1
    frame = pair.send("client", ipv4_packet(1))
    assert frame is not None and frame[0] == 0xFD


def test_ccp_rejected_by_peer_without_mppe_lets_clear_data_flow() -> None:
    pair = up_pair(s_ccp=False)
    up = pair.link_up("client")
    assert up is not None and up.mppe == "none"
    rejects = [p for p in frames_of(pair.wires["sc"].frames, 0xC021) if p.code == Code.PROTOCOL_REJECT]
    assert rejects and rejects[0].data[:2] == b"\x80\xfd"
    packet = ipv4_packet(7)
    assert pair.send("client", packet) == b"\x21" + packet
    pair.pump()
    assert pair.wires["cs"].delivered == [packet]


def test_ccp_deflate_offer_is_rejected() -> None:
    pair = up_pair(s_mppe=MppePolicy.nomppe(), c_mppe=MppePolicy.nomppe())
    deflate = Packet(code=Code.CONFIGURE_REQUEST, identifier=77, data=bytes((26, 4, 0x78, 0x00)))
    pair.server.receive_frame(b"\x80\xfd" + deflate.encode(), pair.now)
    replies = [Packet.decode(decode_frame(f)[1]) for f in pair.server.frames_to_send()]
    assert Packet(code=Code.CONFIGURE_REJECT, identifier=77, data=bytes((26, 4, 0x78, 0x00))) in replies


# --- MPPE under loss ---------------------------------------------------------------------------


def test_stateless_mppe_survives_deterministic_loss() -> None:
    lost = {3, 7, 8}
    count = {"n": 0}

    def drop_some(direction: str, frame: bytes) -> bytes | None:
        if direction == "cs" and frame[0] == 0xFD:
            count["n"] += 1
            if count["n"] in lost:
                return None
        return frame

    pair = up_pair(tamper=drop_some)
    packets = [ipv4_packet(i) for i in range(1, 21)]
    for p in packets:
        pair.send("client", p)
    pair.pump()
    assert pair.wires["cs"].delivered == [p for i, p in enumerate(packets, 1) if i not in lost]
    _, rx = pair.server.mppe_stats
    assert rx is not None and rx.lost == 3


def test_stateless_mppe_under_random_loss_reorder_duplication() -> None:
    pair = up_pair(loss=0.1, reorder=0.2, duplicate=0.1, seed=7, lossy_data_only=True)
    packets = [ipv4_packet(i) for i in range(300)]
    for i, p in enumerate(packets):
        pair.send("client", p)
        if i % 10 == 9:
            pair.pump()
    pair.pump()
    got = pair.wires["cs"].delivered
    index = [packets.index(p) for p in got]
    assert index == sorted(set(index))  # in order, no duplicate ever delivered
    assert len(got) > 200
    assert index[-1] >= 290  # still decrypting at the end


def test_stateful_mppe_loss_reset_and_recovery() -> None:
    count = {"n": 0}

    def drop_fifth(direction: str, frame: bytes) -> bytes | None:
        if direction == "cs" and frame[0] == 0xFD:
            count["n"] += 1
            if count["n"] == 5:
                return None
        return frame

    stateful = MppePolicy(bits_40=False, stateful=True)
    pair = up_pair(c_mppe=stateful, s_mppe=stateful, tamper=drop_fifth)
    up = pair.link_up("client")
    assert up is not None and up.mppe == "MPPE 128-bit stateful"
    first = [ipv4_packet(i) for i in range(1, 11)]
    for p in first:
        pair.send("client", p)
    pair.pump()
    assert pair.wires["cs"].delivered == first[:4]  # 6..10 discarded until the flush
    resets = [p for p in frames_of(pair.wires["sc"].frames, 0x80FD) if p.code == Code.RESET_REQUEST]
    acks = [p for p in frames_of(pair.wires["cs"].frames, 0x80FD) if p.code == Code.RESET_ACK]
    assert len(resets) == 1 and len(acks) == 1 and acks[0].identifier == resets[0].identifier
    channel = pair.server.mppe_channel
    assert pair.server.get_timer() is None or (channel is not None and channel.reset_deadline is None)
    second = [ipv4_packet(i) for i in range(11, 31)]
    for p in second:
        pair.send("client", p)
    pair.pump()
    assert pair.wires["cs"].delivered == first[:4] + second
    tx, _ = pair.client.mppe_stats
    assert tx is not None and tx.resets == 1


def test_stateful_reset_request_is_retransmitted_while_discarding() -> None:
    state = {"n": 0, "drop_acks": True}

    def tamper(direction: str, frame: bytes) -> bytes | None:
        proto, info = decode_frame(frame)
        if direction == "cs" and frame[0] == 0xFD:
            state["n"] += 1
            if state["n"] == 2:
                return None
        if direction == "sc" and proto == 0x80FD and info[0] == Code.RESET_REQUEST and state["drop_acks"]:
            state["drop_acks"] = False
            return None  # the first Reset-Request is lost
        return frame

    stateful = MppePolicy(bits_40=False, stateful=True)
    pair = up_pair(c_mppe=stateful, s_mppe=stateful, tamper=tamper)
    for i in range(4):
        pair.send("client", ipv4_packet(i))
    pair.pump()
    channel = pair.server.mppe_channel
    assert channel is not None and channel.decryptor is not None and channel.decryptor.discarding
    pair.run(until=pair.now + 1.5)  # the retransmission reaches the client
    pair.send("client", ipv4_packet(99))
    pair.pump()
    assert pair.wires["cs"].delivered[-1] == ipv4_packet(99)
    resets = [p for p in frames_of(pair.wires["sc"].frames, 0x80FD) if p.code == Code.RESET_REQUEST]
    assert len(resets) == 2


# --- keepalive, renegotiation, closing ------------------------------------------------------------


def test_echo_failure_means_peer_dead() -> None:
    pair = up_pair()
    t0 = pair.now
    pair.silent.update({"client", "server"})
    pair.run(until=t0 + 10 * 3 + 4)
    assert pair.link_down("client") is None
    pair.run(until=t0 + 60)
    down = pair.link_down("client")
    assert down is not None and (down.outcome, down.exit_status) == (Outcome.PEER_DEAD, 15)


def test_echoes_answered_keep_the_link() -> None:
    pair = up_pair()
    pair.run(until=300.0)
    assert pair.link_down("client") is None and pair.link_down("server") is None
    assert pair.client.lcp.counters["tx_echo_request"] >= 25


def test_lcp_renegotiation_goes_back_through_authentication() -> None:
    pair = up_pair()
    magic = struct.pack("!I", 0x0BADCAFE)
    request = Packet(code=Code.CONFIGURE_REQUEST, identifier=200, data=bytes((5, 6)) + magic)
    pair.server.receive_frame(b"\xff\x03\xc0\x21" + request.encode(), pair.now)
    pair.pump()
    pair.run(until=pair.now + 10)
    server_phases = [e.phase for e in pair.of_type("server", PhaseChanged)]
    assert server_phases[-3:] == [Phase.ESTABLISH, Phase.AUTHENTICATE, Phase.NETWORK]
    assert server_phases.count(Phase.AUTHENTICATE) == 2
    assert Phase.ESTABLISH in server_phases[3:]
    assert pair.of_type("server", NetworkDown)
    assert len(pair.of_type("server", Authenticated)) == 2
    assert len(pair.of_type("server", LinkUp)) == 2 and len(pair.of_type("client", LinkUp)) == 2
    packet = ipv4_packet(5)
    pair.send("server", packet)
    pair.pump()
    assert pair.wires["sc"].delivered == [packet]


def test_close_sends_reason_and_ends_both() -> None:
    pair = up_pair()
    pair.server.close(pair.now, "Administrator shutdown")
    pair.run(until=pair.now + 10)
    terms = [p for p in frames_of(pair.wires["sc"].frames, 0xC021) if p.code == Code.TERMINATE_REQUEST]
    assert terms[0].data == b"Administrator shutdown"
    assert pair.link_down("server") == LinkDown(
        outcome=Outcome.LOCAL_CLOSE, reason="Administrator shutdown", exit_status=5
    )
    client = pair.link_down("client")
    assert client is not None and client.outcome is Outcome.PEER_TERMINATED and client.exit_status == 0
    assert pair.client.send_packet(ipv4_packet(1), pair.now) is None


def test_lower_layer_down_and_idle_timeout() -> None:
    pair = up_pair(c_idle_timeout=30.0)
    pair.server.lower_down(pair.now)
    down = pair.server.next_event()
    while down is not None and not isinstance(down, LinkDown):
        down = pair.server.next_event()
    assert down == LinkDown(outcome=Outcome.LOWER_LAYER_DOWN, reason="lower layer down", exit_status=16)
    assert pair.server.get_timer() is None
    pair2 = up_pair(c_idle_timeout=30.0)
    t0 = pair2.now
    pair2.run(until=t0 + 20)
    pair2.send("client", ipv4_packet(1))
    pair2.run(until=t0 + 45)
    assert pair2.link_down("client") is None
    pair2.run(until=t0 + 70)
    down2 = pair2.link_down("client")
    assert down2 is not None and down2.outcome is Outcome.IDLE_TIMEOUT and down2.exit_status == 12


# --- Protocol-Reject, early NCPs, IPV6CP -----------------------------------------------------------


def test_unknown_protocol_is_protocol_rejected_only_when_opened() -> None:
    session = PppSession(server_config(), 0.0)
    session.open(0.0)
    session.frames_to_send()
    session.receive_frame(b"\x00\x31hello", 0.0)
    assert session.frames_to_send() == []
    pair = up_pair()
    pair.server.receive_frame(b"\xff\x03\x00\x31hello", pair.now)
    frames = pair.server.frames_to_send()
    assert len(frames) == 1
    reject = Packet.decode(decode_frame(frames[0])[1])
    assert reject.code == Code.PROTOCOL_REJECT and reject.data == b"\x00\x31hello"
    assert decode_frame(frames[0])[0] == 0xC021


def test_ncp_packets_before_network_phase_are_discarded() -> None:
    session = PppSession(server_config(), 0.0)
    session.open(0.0)
    session.frames_to_send()
    ipcp = Packet(code=Code.CONFIGURE_REQUEST, identifier=1, data=bytes((3, 6, 0, 0, 0, 0)))
    session.receive_frame(b"\x80\x21" + ipcp.encode(), 0.0)
    assert session.frames_to_send() == []
    assert session.stats.dropped["ncp_before_network"] == 1


def test_ipv6cp_up_with_distinct_ids_and_ipv6_flows() -> None:
    pair = up_pair(c_ipv6=True, s_ipv6=True)
    up_c, up_s = pair.of_type("client", Ipv6Up), pair.of_type("server", Ipv6Up)
    assert up_c and up_s
    assert up_c[0].local_id == up_s[0].peer_id and up_c[0].peer_id == up_s[0].local_id
    assert up_c[0].local_id != up_c[0].peer_id
    link = pair.link_up("client")
    assert link is not None and link.local_ipv6_id == up_c[0].local_id
    packets = [ipv6_packet(i) for i in range(4)]
    for p in packets:
        frame = pair.send("client", p)
        assert frame is not None and frame[0] == 0xFD
        pair.send("server", p)
    pair.pump()
    assert pair.wires["cs"].delivered == packets and pair.wires["sc"].delivered == packets


def test_ipv6cp_protocol_rejected_by_peer_without_it() -> None:
    pair = up_pair(c_ipv6=True, s_ipv6=False)
    assert pair.link_up("client") is not None
    assert not pair.of_type("client", Ipv6Up)
    rejects = [p for p in frames_of(pair.wires["sc"].frames, 0xC021) if p.code == Code.PROTOCOL_REJECT]
    assert rejects and rejects[0].data[:2] == b"\x80\x57"
    assert pair.send("client", ipv6_packet(1)) is None
    assert pair.send("client", ipv4_packet(1)) is not None
    assert pair.link_down("client") is None


# --- what pppd sees first ---------------------------------------------------------------------------


def test_first_frames_look_like_pppd_expects() -> None:
    client = PppSession(client_config(), 0.0)
    client.open(0.0)
    first = client.frames_to_send()[0]
    assert first[:4] == b"\xff\x03\xc0\x21"
    request = Packet.decode(first[4:])
    assert request.code == Code.CONFIGURE_REQUEST
    assert [(o.type, len(o.data)) for o in decode_options(request.data)] == [(2, 4), (5, 4), (7, 0), (8, 0)]
    assert decode_options(request.data)[0].data == bytes(4)  # asyncmap 0

    server = PppSession(server_config(AuthMethod.MSCHAP_V2), 0.0)
    server.open(0.0)
    srv_request = Packet.decode(server.frames_to_send()[0][4:])
    assert (3, b"\xc2\x23\x81") in [(o.type, o.data) for o in decode_options(srv_request.data)]

    pair = SessionPair(client_config(), server_config(AuthMethod.MSCHAP_V2))
    pair.start()
    chap = [bytes(info) for proto, info in map(decode_frame, pair.wires["sc"].frames) if proto == 0xC223]
    info = next(c for c in chap if c[0] == 1)
    assert info[4] == 16 and info[5 + 16 :] == b"pptpd"  # Value-Size 16, Name "pptpd"


# --- config and fuzzing ---------------------------------------------------------------------------


def test_config_validation() -> None:
    from pptpkit.auth.policy import AuthPolicy

    with pytest.raises(ConfigError):
        SessionConfig(role=SessionRole.SERVER, auth_policy=AuthPolicy(auth_required=True))
    with pytest.raises(ConfigError):
        SessionConfig(role=SessionRole.CLIENT, ccp=False, mppe=MppePolicy(required=True))
    with pytest.raises(ConfigError):
        MppePolicy(bits_40=False, bits_128=False, required=True)
    assert MppePolicy.from_pppd_options(["require-mppe-128"]) == MppePolicy(bits_40=False, required=True)
    assert MppePolicy.from_pppd_options(["nomppe"]) == MppePolicy.nomppe()
    assert MppePolicy.from_pppd_options(["require-mppe", "mppe-stateful"]).stateful


def _valid_frames() -> list[bytes]:
    pair = up_pair(c_ipv6=True, s_ipv6=True)
    pair.send("client", ipv4_packet(1))
    pair.send("client", ipv6_packet(2))
    return pair.wires["cs"].frames


VALID = _valid_frames()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.sampled_from(VALID), st.integers(0, 300), st.binary(max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2]
        ),
        st.tuples(st.sampled_from(VALID), st.integers(0, 299), st.integers(0, 255)).map(
            lambda t: t[0][: t[1]] + bytes((t[2],)) + t[0][t[1] + 1 :]
        ),
    )
)
def test_fuzz_frames_into_open_session_never_raise(frame: bytes) -> None:
    pair = FUZZ_PAIR
    result = pair.server.receive_frame(frame, pair.now)
    assert result is None or isinstance(result, bytes)
    pair.server.frames_to_send()
    while pair.server.next_event() is not None:
        pass
    pair.server.handle_timer(pair.now)


FUZZ_PAIR = up_pair(c_ipv6=True, s_ipv6=True)


def test_data_from_the_peer_keeps_the_link_up_when_echoes_are_lost() -> None:
    """On a lossy path three lost Echo-Replies in a row are common; a peer whose data keeps
    arriving is alive, so only a silent peer is declared dead (pppd's lcp-echo-adaptive)."""
    def drop_echo_replies(direction: str, frame: bytes) -> bytes | None:
        protocol, info = decode_frame(frame)
        return None if protocol == 0xC021 and info[0] == Code.ECHO_REPLY else frame

    pair = up_pair(tamper=drop_echo_replies)
    assert pair.link_up("client") is not None
    t0 = pair.now
    while pair.now < t0 + 120:  # twelve echo intervals, every reply lost
        pair.send("server", ipv4_packet(1))
        pair.send("client", ipv4_packet(2))
        pair.run(until=pair.now + 2.0)
    assert pair.link_down("client") is None and pair.link_down("server") is None
    # Silence, and the same lost replies: now it is dead.
    pair.run(until=pair.now + 60)
    down = pair.link_down("client")
    assert down is not None and down.outcome is Outcome.PEER_DEAD


def test_lost_chap_success_costs_one_restart_interval_not_the_setup() -> None:
    # The server goes on to the network phase; the client, still authenticating, must discard
    # its NCP packets.  Only the client's repeated Response gets the Success through again.
    lost: list[bytes] = []

    def lose_success(direction: str, frame: bytes) -> bytes | None:
        proto, info = decode_frame(frame)
        if direction == "sc" and proto == 0xC223 and info[0] == 3 and not lost:
            lost.append(frame)
            return None
        return frame

    pair = SessionPair(client_config(mppe=MppePolicy(required=True)),
                       server_config(mppe=MppePolicy(required=True)), tamper=lose_success)
    pair.start()
    pair.run(until=2.9)
    assert lost and pair.link_up("client") is None and pair.client.phase is Phase.AUTHENTICATE
    assert pair.client.stats.dropped["ncp_before_network"] >= 1
    pair.run(until=6.5)  # the Response repeated at 3 s, then CCP and IPCP (one restart each at most)
    assert pair.link_up("client") is not None and pair.link_up("server") is not None



def _eap_server(eap_type: int, mppe: MppePolicy) -> SessionConfig:
    base = server_config(AuthMethod.EAP, mppe=mppe)
    assert base.authenticator is not None
    return replace(base, authenticator=replace(base.authenticator, eap_methods=(eap_type,)))


@pytest.mark.parametrize("eap_type", [26, 4], ids=["eap-mschapv2", "eap-md5"])
def test_lost_eap_success_is_inferred_from_the_servers_ncp_packets(eap_type: int) -> None:
    # EAP-Success is never repeated and the peer never repeats a Response on a timer (RFC 2284
    # 2.2.1), so only the server's NCP packets can tell the client it is in (RFC 2284 2.2.2).
    lost: list[bytes] = []

    def lose_success(direction: str, frame: bytes) -> bytes | None:
        proto, info = decode_frame(frame)
        if direction == "sc" and proto == 0xC227 and info[0] == 3 and not lost:
            lost.append(frame)
            return None
        return frame

    mppe = MppePolicy(required=True) if eap_type == 26 else MppePolicy()  # MD5 derives no keys
    pair = SessionPair(client_config(mppe=mppe), _eap_server(eap_type, mppe), tamper=lose_success)
    pair.start()
    pair.run(until=1.0)  # within the first restart interval: nothing had to be retransmitted
    assert lost
    assert pair.link_up("client") is not None and pair.link_up("server") is not None
    assert pair.client.stats.dropped["ncp_before_network"] == 0
    # And the tunnel carries data, under the keys both sides derived.
    pair.send("client", ipv4_packet(7))
    pair.send("server", ipv4_packet(8))
    pair.pump()
    assert pair.wires["cs"].delivered == [ipv4_packet(7)]
    assert pair.wires["sc"].delivered == [ipv4_packet(8)]


def test_an_ncp_packet_before_the_eap_method_finished_is_no_success() -> None:
    # Before the client has checked the server's proof, an NCP packet says nothing: discarded,
    # the client stays in the authentication phase.
    def hold_challenge(direction: str, frame: bytes) -> bytes | None:
        proto, info = decode_frame(frame)
        if direction == "sc" and proto == 0xC227 and info[0] == 1 and len(info) > 4 and info[4] == 26:
            return None
        return frame

    pair = SessionPair(client_config(), _eap_server(26, MppePolicy()), tamper=hold_challenge)
    pair.start()
    pair.run(until=1.0)
    assert pair.client.phase is Phase.AUTHENTICATE
    ccp_request = frame_header(0x80FD) + Packet(code=Code.CONFIGURE_REQUEST, identifier=1).encode()
    pair.client.receive_frame(ccp_request, pair.now)
    assert pair.client.phase is Phase.AUTHENTICATE and pair.link_up("client") is None
    assert pair.client.stats.dropped["ncp_before_network"] == 1
