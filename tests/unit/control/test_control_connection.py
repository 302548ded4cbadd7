"""The RFC 2637 control-connection engine: client and server back to back on a virtual clock."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from control_harness import Link, drain, of_type, split_messages

from pptpkit.control import (
    CallCleared,
    CallDirection,
    CallEstablished,
    CallFailed,
    CallIdAllocator,
    CallRejected,
    CallRequested,
    CallState,
    CloseCause,
    ConnectionClosed,
    ConnectionEstablished,
    ConnectionState,
    ControlConfig,
    ControlConnection,
    Initiator,
    LinkInfoReceived,
    ProtocolViolation,
    Role,
    WanErrorReceived,
)
from pptpkit.control.connection import MAX_PENDING_EVENTS, MAX_PENDING_OUTPUT
from pptpkit.control.messages import (
    CallClearRequest,
    CallDisconnectNotify,
    DisconnectResult,
    EchoReply,
    EchoRequest,
    GeneralError,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
    IncomingCallResult,
    OutgoingCallReply,
    OutgoingCallRequest,
    OutgoingCallResult,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StartResult,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    StopReason,
    StopResult,
    WanErrorNotify,
)
from pptpkit.errors import ConfigError, StateError

CLIENT = ControlConfig(role=Role.CLIENT)
SERVER = ControlConfig(role=Role.SERVER)


def closed_event(events: Sequence[object]) -> ConnectionClosed:
    closes = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closes) == 1, events
    assert events[-1] is closes[0], "ConnectionClosed must be the last event"
    return closes[0]


# --- start -----------------------------------------------------------------------------------------


def test_connection_comes_up_with_our_defaults() -> None:
    link = Link().up()
    assert link.client.state is ConnectionState.ESTABLISHED
    assert link.server.state is ConnectionState.ESTABLISHED
    sccrq, sccrp = link.to_server[0], link.to_client[0]
    assert isinstance(sccrq, StartControlConnectionRequest)
    assert isinstance(sccrp, StartControlConnectionReply)
    assert sccrq.protocol_version == sccrp.protocol_version == 0x0100
    assert sccrq.vendor == sccrp.vendor == "pptpkit"
    assert sccrq.max_channels == 0  # a PNS SHOULD send 0
    assert sccrp.max_channels == SERVER.max_calls
    assert sccrp.result_code == StartResult.SUCCESS
    [up_c] = of_type(link.client_events, ConnectionEstablished)
    [up_s] = of_type(link.server_events, ConnectionEstablished)
    assert up_c.peer.vendor == "pptpkit" and up_s.peer.host_name == "local"
    assert link.client.get_timer() == pytest.approx(link.now + 60.0)  # echo after 60 s of silence


def test_server_start_timeout_is_exact() -> None:
    server = ControlConnection(SERVER, now=50.0, rng=random.Random(1))
    assert server.get_timer() == 60.0
    server.handle_timer(59.999)
    assert not server.closed
    server.handle_timer(60.0)
    assert server.closed
    assert server.data_to_send() == b""
    event = closed_event(drain(server))
    assert event.cause is CloseCause.START_TIMEOUT and not event.clean


def test_client_start_reply_timeout() -> None:
    cfg = ControlConfig(role=Role.CLIENT, start_reply_timeout=30.0)
    client = ControlConnection(cfg, now=0.0, rng=random.Random(1))
    [sccrq] = split_messages(client.data_to_send())
    assert isinstance(sccrq, StartControlConnectionRequest)
    client.handle_timer(29.0)
    assert not client.closed
    client.handle_timer(30.0)
    assert client.closed
    assert closed_event(drain(client)).cause is CloseCause.START_REPLY_TIMEOUT


def test_server_refuses_an_older_version_with_the_version_result() -> None:
    server = ControlConnection(SERVER, now=0.0, rng=random.Random(1))
    server.receive_data(StartControlConnectionRequest(protocol_version=0x00FF).encode(), 1.0)
    [reply] = split_messages(server.data_to_send())
    assert isinstance(reply, StartControlConnectionReply)
    assert reply.result_code == StartResult.BAD_VERSION
    assert reply.protocol_version == 0x0100
    assert server.closed
    event = closed_event(drain(server))
    assert event.cause is CloseCause.VERSION_MISMATCH and event.code == StartResult.BAD_VERSION


def test_server_answers_a_newer_version_with_its_own() -> None:
    server = ControlConnection(SERVER, now=0.0, rng=random.Random(1))
    server.receive_data(StartControlConnectionRequest(protocol_version=0x0200).encode(), 1.0)
    [reply] = split_messages(server.data_to_send())
    assert isinstance(reply, StartControlConnectionReply)
    assert reply.result_code == StartResult.SUCCESS and reply.protocol_version == 0x0100
    assert server.state is ConnectionState.ESTABLISHED


def test_client_stops_on_unsupported_reply_version() -> None:
    client = ControlConnection(CLIENT, now=0.0, rng=random.Random(1))
    client.data_to_send()
    client.receive_data(StartControlConnectionReply(protocol_version=0x0200).encode(), 1.0)
    [stop] = split_messages(client.data_to_send())
    assert stop == StopControlConnectionRequest(reason=StopReason.STOP_PROTOCOL)
    assert client.state is ConnectionState.WAIT_STOP_REPLY
    client.receive_data(StopControlConnectionReply().encode(), 2.0)
    event = closed_event(drain(client))
    assert event.cause is CloseCause.VERSION_MISMATCH and event.code == StopReason.STOP_PROTOCOL


@pytest.mark.parametrize(
    ("result", "cause"),
    [
        (StartResult.BAD_VERSION, CloseCause.VERSION_MISMATCH),
        (StartResult.NOT_AUTHORIZED, CloseCause.START_REJECTED),
    ],
)
def test_client_closes_when_start_is_refused(result: StartResult, cause: CloseCause) -> None:
    client = ControlConnection(CLIENT, now=0.0, rng=random.Random(1))
    client.data_to_send()
    client.receive_data(StartControlConnectionReply(result_code=result).encode(), 1.0)
    assert client.closed
    event = closed_event(drain(client))
    assert event.cause is cause and event.code == result and event.initiated_by is Initiator.REMOTE


def test_duplicate_start_request_gets_already_exists() -> None:
    link = Link().up()
    link.server.receive_data(StartControlConnectionRequest().encode(), link.now)
    [reply] = split_messages(link.server.data_to_send())
    assert isinstance(reply, StartControlConnectionReply)
    assert reply.result_code == StartResult.ALREADY_EXISTS
    assert link.server.state is ConnectionState.ESTABLISHED
    assert link.server.stats.protocol_errors == 1


# --- calls -----------------------------------------------------------------------------------------


def test_several_calls_up_and_down() -> None:
    link = Link().up()
    pairs = [link.call() for _ in range(3)]
    client_ids = [c for c, _ in pairs]
    server_ids = [s for _, s in pairs]
    assert len(set(client_ids)) == 3 and len(set(server_ids)) == 3

    for client_id, server_id in pairs:
        c = link.client.get_call(client_id)
        s = link.server.get_call(server_id)
        assert c is not None and s is not None
        assert c.state is s.state is CallState.ESTABLISHED
        assert c.peer_call_id == server_id and s.peer_call_id == client_id
        assert c.peer_window == 64 and s.peer_window == 64
        assert c.connect_speed == s.connect_speed == SERVER.connect_speed
        assert c.serial_number == s.serial_number
    assert len(of_type(link.client_events, CallEstablished)) == 3
    assert len(of_type(link.server_events, CallEstablished)) == 3

    # Client hangs up the first: Call-Clear-Request, the PAC answers Call-Disconnect-Notify.
    link.client.clear_call(link.now, client_ids[0])
    link.pump()
    assert isinstance(link.to_server[-1], CallClearRequest)
    cdn = link.to_client[-1]
    assert isinstance(cdn, CallDisconnectNotify)
    assert cdn.call_id == server_ids[0] and cdn.result_code == DisconnectResult.REQUEST
    [c_cleared] = of_type(link.client_events, CallCleared)
    [s_cleared] = of_type(link.server_events, CallCleared)
    assert c_cleared.call_id == client_ids[0] and c_cleared.initiated_by is Initiator.LOCAL
    assert c_cleared.result_code == DisconnectResult.REQUEST
    assert s_cleared.call_id == server_ids[0] and s_cleared.initiated_by is Initiator.REMOTE

    # Server hangs up the second.
    link.server.clear_call(link.now, server_ids[1], cause_code=16, call_statistics="bye")
    link.pump()
    c_cleared = of_type(link.client_events, CallCleared)[-1]
    assert c_cleared.call_id == client_ids[1] and c_cleared.initiated_by is Initiator.REMOTE
    assert c_cleared.result_code == DisconnectResult.ADMIN_SHUTDOWN
    assert c_cleared.cause_code == 16 and c_cleared.call_statistics == "bye"
    assert of_type(link.server_events, CallCleared)[-1].initiated_by is Initiator.LOCAL

    assert set(link.client.calls) == {client_ids[2]}
    assert set(link.server.calls) == {server_ids[2]}
    assert link.client.state is link.server.state is ConnectionState.ESTABLISHED


def test_call_rejected_by_server() -> None:
    link = Link().up()
    client_id = link.client.open_call(link.now, phone_number="5551234")
    link.pump()
    [request] = of_type(link.server_events, CallRequested)
    assert request.phone_number == "5551234" and request.peer_window == 64
    link.server.reject_call(link.now, request.call_id, result=OutgoingCallResult.BUSY, cause_code=17)
    link.pump()
    [failed] = of_type(link.client_events, CallFailed)
    assert failed.call_id == client_id
    assert failed.result_code == OutgoingCallResult.BUSY and failed.cause_code == 17
    assert link.client.calls == {} and link.server.calls == {}
    with pytest.raises(ConfigError):
        link.client.open_call(link.now, phone_number="x" * 65)


def test_max_calls_is_enforced_by_the_server() -> None:
    link = Link(server_config=ControlConfig(role=Role.SERVER, max_calls=2)).up()
    link.call()
    link.call()
    third = link.client.open_call(link.now)
    link.pump()
    assert len(of_type(link.server_events, CallRequested)) == 2  # the owner never saw the third
    [rejected] = of_type(link.server_events, CallRejected)
    assert rejected.peer_call_id == third and rejected.error_code == GeneralError.NO_RESOURCE
    [failed] = of_type(link.client_events, CallFailed)
    assert failed.call_id == third
    assert failed.result_code == OutgoingCallResult.GENERAL_ERROR
    assert failed.error_code == GeneralError.NO_RESOURCE
    assert link.server.stats.calls_refused == 1


def test_client_max_calls_is_a_state_error() -> None:
    link = Link(client_config=ControlConfig(role=Role.CLIENT, max_calls=1)).up()
    link.client.open_call(link.now)
    with pytest.raises(StateError):
        link.client.open_call(link.now)


def test_shared_allocator_gives_unique_ids_across_connections() -> None:
    ids = CallIdAllocator(rng=random.Random(7), max_in_use=5)
    links = [Link(seed=10 * i, server_ids=ids).up() for i in range(2)]
    server_ids = [links[i % 2].call()[1] for i in range(4)]
    assert len(set(server_ids)) == 4
    assert len(ids) == 4
    # Fifth ID is the last; the sixth request anywhere is refused for lack of IDs.
    links[0].call()
    links[1].client.open_call(links[1].now)
    links[1].pump()
    [rejected] = of_type(links[1].server_events, CallRejected)
    assert rejected.error_code == GeneralError.NO_RESOURCE
    # Closing one connection returns its IDs to the shared pool.
    links[0].server.stop(links[0].now)
    links[0].pump()
    assert len(ids) == 2
    links[1].call()
    assert len(ids) == 3


def test_outgoing_call_reply_timeout() -> None:
    link = Link(
        client_config=ControlConfig(role=Role.CLIENT, call_reply_timeout=20.0),
        server_config=ControlConfig(role=Role.SERVER, call_reply_timeout=100.0),
    ).up()
    start = link.now
    client_id = link.client.open_call(link.now)
    link.pump()
    assert of_type(link.server_events, CallRequested)  # the owner never answers
    link.advance(start + 19.9)
    assert not of_type(link.client_events, CallFailed)
    link.advance(start + 20.0)
    [failed] = of_type(link.client_events, CallFailed)
    assert failed.call_id == client_id and failed.result_code is None
    assert link.now == start + 20.0
    assert link.to_server[-1] == CallClearRequest(call_id=client_id)  # aborted on the wire
    # The server dropped its half on the Call-Clear-Request (owner hears CallFailed).
    assert link.server.calls == {}
    assert of_type(link.server_events, CallFailed)


def test_server_times_out_an_unanswered_request() -> None:
    link = Link(server_config=ControlConfig(role=Role.SERVER, call_reply_timeout=5.0)).up()
    start = link.now
    client_id = link.client.open_call(link.now)
    link.pump()
    link.advance(start + 5.0)
    reply = link.to_client[-1]
    assert isinstance(reply, OutgoingCallReply) and reply.result_code == OutgoingCallResult.TIMEOUT
    assert of_type(link.client_events, CallFailed)[0].call_id == client_id
    assert link.server.calls == {}


def test_accept_and_reject_need_a_waiting_call() -> None:
    link = Link().up()
    with pytest.raises(StateError):
        link.server.accept_call(link.now, 1)
    with pytest.raises(StateError):
        link.client.accept_call(link.now, 1)
    with pytest.raises(StateError):
        link.server.open_call(link.now)
    _, server_id = link.call()
    with pytest.raises(StateError):
        link.server.reject_call(link.now, server_id)
    with pytest.raises(StateError):
        link.server.clear_call(link.now, 999 if server_id != 999 else 998)


# --- keepalive -------------------------------------------------------------------------------------


def test_echo_keepalive_exchange() -> None:
    cfg = ControlConfig(role=Role.CLIENT, echo_interval=10.0, echo_max_wait=5.0)
    link = Link(client_config=cfg, server_config=ControlConfig(role=Role.SERVER, echo_interval=None)).up()
    start = link.now
    link.advance(start + 9.99)
    assert not any(isinstance(m, EchoRequest) for m in link.to_server)
    link.advance(start + 100.0)
    echoes = [m for m in link.to_server if isinstance(m, EchoRequest)]
    replies = [m for m in link.to_client if isinstance(m, EchoReply)]
    assert len(echoes) == 10  # one per 10 s of silence
    assert [r.identifier for r in replies] == [e.identifier for e in echoes]
    assert len({e.identifier for e in echoes}) == 10
    assert link.client.state is ConnectionState.ESTABLISHED
    assert link.client.stats.echo_replies_received == 10
    assert link.server.stats.echo_requests_received == 10


def test_traffic_from_the_peer_postpones_the_echo() -> None:
    cfg = ControlConfig(role=Role.CLIENT, echo_interval=10.0, echo_max_wait=5.0)
    link = Link(client_config=cfg, server_config=ControlConfig(role=Role.SERVER, echo_interval=None)).up()
    start = link.now
    link.advance(start + 8.0)
    link.call()  # the server's Outgoing-Call-Reply arrives at +8
    link.advance(start + 17.9)
    assert not any(isinstance(m, EchoRequest) for m in link.to_server)
    link.advance(start + 18.0)
    assert isinstance(link.to_server[-1], EchoRequest)


def test_echo_timeout_tears_down_after_exactly_the_configured_time() -> None:
    cfg = ControlConfig(role=Role.CLIENT, echo_interval=10.0, echo_max_wait=5.0)
    link = Link(client_config=cfg, server_config=ControlConfig(role=Role.SERVER, echo_interval=None)).up()
    client_id, _ = link.call()
    start = link.now
    link.cut_to_client = True  # the server's answers are lost from now on
    link.advance(start + 14.999)
    assert not link.client.closed
    assert sum(isinstance(m, EchoRequest) for m in link.to_server) == 1
    link.advance(start + 15.0)
    assert link.client.closed
    event = closed_event(link.client_events)
    assert event.cause is CloseCause.ECHO_TIMEOUT and not event.clean
    cleared = of_type(link.client_events, CallCleared)
    assert [c.call_id for c in cleared] == [client_id]
    # the server, whose TCP the client closed, sees the connection go too
    assert closed_event(link.server_events).cause is CloseCause.CONNECTION_LOST


def test_echo_request_is_always_answered_even_before_start() -> None:
    server = ControlConnection(SERVER, now=0.0, rng=random.Random(1))
    server.receive_data(EchoRequest(identifier=42).encode(), 1.0)
    [reply] = split_messages(server.data_to_send())
    assert reply == EchoReply(identifier=42, result_code=2, error_code=GeneralError.NOT_CONNECTED)


def test_mismatched_echo_identifier_still_counts_as_alive() -> None:
    cfg = ControlConfig(role=Role.CLIENT, echo_interval=10.0, echo_max_wait=5.0)
    link = Link(client_config=cfg, server_config=ControlConfig(role=Role.SERVER, echo_interval=None)).up()
    start = link.now
    link.cut_to_client = True
    link.advance(start + 10.0)
    echo = link.to_server[-1]
    assert isinstance(echo, EchoRequest)
    link.client.receive_data(EchoReply(identifier=echo.identifier ^ 1).encode(), start + 11.0)
    link.advance(start + 20.0)
    assert not link.client.closed
    assert link.client.stats.echo_mismatched == 1


# --- stop ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["client", "server"])
def test_stop_initiated_by_either_side(side: str) -> None:
    link = Link().up()
    client_id, server_id = link.call()
    stopper = link.client if side == "client" else link.server
    stopper.stop(link.now, StopReason.LOCAL_SHUTDOWN)
    assert stopper.state is ConnectionState.WAIT_STOP_REPLY
    link.pump()
    stops = link.to_server if side == "client" else link.to_client
    replies = link.to_client if side == "client" else link.to_server
    assert stops[-1] == StopControlConnectionRequest(reason=StopReason.LOCAL_SHUTDOWN)
    assert replies[-1] == StopControlConnectionReply(result_code=StopResult.OK)
    assert link.client.closed and link.server.closed
    stopper_events = link.client_events if side == "client" else link.server_events
    other_events = link.server_events if side == "client" else link.client_events
    mine = closed_event(stopper_events)
    theirs = closed_event(other_events)
    assert mine.cause is CloseCause.STOPPED_LOCALLY and mine.initiated_by is Initiator.LOCAL and mine.clean
    assert theirs.cause is CloseCause.STOPPED_BY_PEER and theirs.initiated_by is Initiator.REMOTE
    assert theirs.code == StopReason.LOCAL_SHUTDOWN and theirs.clean
    # the call is implicitly cleared on both sides
    assert [c.call_id for c in of_type(link.client_events, CallCleared)] == [client_id]
    assert [c.call_id for c in of_type(link.server_events, CallCleared)] == [server_id]
    assert link.client.get_timer() is None and link.server.get_timer() is None


def test_stop_reply_timeout() -> None:
    link = Link(client_config=ControlConfig(role=Role.CLIENT, stop_reply_timeout=3.0)).up()
    link.cut_to_server = True  # the server never sees the Stop, so never answers or closes
    start = link.now
    link.client.stop(link.now)
    link.pump()
    link.advance(start + 2.9)
    assert not link.client.closed
    link.advance(start + 3.0)
    event = closed_event(link.client_events)
    assert event.cause is CloseCause.STOP_REPLY_TIMEOUT and not event.clean


def test_stop_before_established_just_closes() -> None:
    client = ControlConnection(CLIENT, now=0.0, rng=random.Random(1))
    client.data_to_send()
    client.stop(1.0)
    assert client.closed and client.data_to_send() == b""
    assert closed_event(drain(client)).cause is CloseCause.STOPPED_LOCALLY


# --- connection loss (pptpd closes TCP on Call-Clear-Request) --------------------------------------


def test_tcp_close_after_call_clear_is_clean() -> None:
    link = Link().up()
    client_id, _ = link.call()
    link.cut_to_server = True
    link.client.clear_call(link.now, client_id)
    link.pump()
    link.client.connection_lost(link.now)  # as pptpd: no Call-Disconnect-Notify, just FIN
    events = drain(link.client)
    [cleared] = of_type(events, CallCleared)
    assert cleared.call_id == client_id and cleared.initiated_by is Initiator.LOCAL
    event = closed_event(events)
    assert event.cause is CloseCause.CONNECTION_LOST and event.clean
    assert link.client.closed and link.client.data_to_send() == b""
    link.client.connection_lost(link.now)  # idempotent
    assert drain(link.client) == []


def test_server_sees_pptp_linux_hang_up_cleanly() -> None:
    """pptp-linux ends with Call-Clear-Request then FIN, no Stop: orderly for the server."""
    link = Link().up()
    client_id, server_id = link.call()
    link.server.receive_data(CallClearRequest(call_id=client_id).encode(), link.now)
    assert split_messages(link.server.data_to_send()) == [CallDisconnectNotify(call_id=server_id)]
    link.server.connection_lost(link.now)
    events = drain(link.server)
    assert of_type(events, CallCleared)[0].initiated_by is Initiator.REMOTE
    event = closed_event(events)
    assert event.cause is CloseCause.CONNECTION_LOST and event.clean


def test_tcp_close_with_one_call_still_up_is_not_clean() -> None:
    link = Link().up()
    first, _ = link.call()
    link.call()
    link.cut_to_server = True
    link.client.clear_call(link.now, first)
    link.pump()
    link.client.connection_lost(link.now)
    assert not closed_event(drain(link.client)).clean


def test_tcp_close_with_an_active_call_is_not_clean() -> None:
    link = Link().up()
    link.call()
    link.client.connection_lost(link.now)
    events = drain(link.client)
    [cleared] = of_type(events, CallCleared)
    assert cleared.initiated_by is Initiator.REMOTE
    event = closed_event(events)
    assert event.cause is CloseCause.CONNECTION_LOST and not event.clean


def test_call_disconnect_timeout_forgets_the_call() -> None:
    link = Link(client_config=ControlConfig(role=Role.CLIENT, call_reply_timeout=7.0)).up()
    client_id, _ = link.call()
    link.cut_to_client = True
    start = link.now
    link.client.clear_call(link.now, client_id)
    link.pump()
    link.advance(start + 7.0)
    [cleared] = of_type(link.client_events, CallCleared)
    assert cleared.call_id == client_id and "no Call-Disconnect-Notify" in cleared.reason
    assert link.client.calls == {}


# --- link info, WAN errors -------------------------------------------------------------------------


def test_set_link_info_and_wan_error_are_delivered() -> None:
    link = Link().up()
    client_id, server_id = link.call()
    link.client.set_link_info(link.now, client_id, send_accm=0, receive_accm=0x000A0000)
    link.pump()
    assert link.to_server[-1] == SetLinkInfo(peer_call_id=server_id, send_accm=0, receive_accm=0x000A0000)
    [info] = of_type(link.server_events, LinkInfoReceived)
    assert info == LinkInfoReceived(call_id=server_id, send_accm=0, receive_accm=0x000A0000)

    link.server.set_link_info(link.now, server_id)
    link.server.send_wan_error(link.now, server_id, crc_errors=3, alignment_errors=9)
    link.pump()
    [info_c] = of_type(link.client_events, LinkInfoReceived)
    assert info_c.call_id == client_id and info_c.send_accm == 0xFFFFFFFF
    [wan] = of_type(link.client_events, WanErrorReceived)
    assert wan.call_id == client_id and wan.crc_errors == 3 and wan.alignment_errors == 9
    assert wan.framing_errors == 0

    with pytest.raises(StateError):
        link.client.set_link_info(link.now, client_id + 1 if client_id < 0xFFFF else 1)
    with pytest.raises(ConfigError):
        link.client.set_link_info(link.now, client_id, send_accm=1 << 32)


def test_link_info_for_an_unknown_call_is_a_violation() -> None:
    link = Link().up()
    link.server.receive_data(SetLinkInfo(peer_call_id=4242).encode(), link.now)
    link.server.receive_data(WanErrorNotify(peer_call_id=4242).encode(), link.now)
    events = drain(link.server)
    assert [type(e) for e in events] == [ProtocolViolation, ProtocolViolation]
    assert all(isinstance(e, ProtocolViolation) and e.code == GeneralError.BAD_CALL_ID for e in events)
    assert link.server.state is ConnectionState.ESTABLISHED


# --- incoming calls --------------------------------------------------------------------------------


def test_client_declines_incoming_calls_by_default() -> None:
    link = Link().up()
    link.client.receive_data(IncomingCallRequest(call_id=77, call_serial_number=1).encode(), link.now)
    [reply] = split_messages(link.client.data_to_send())
    assert reply == IncomingCallReply(call_id=0, peer_call_id=77,
                                      result_code=IncomingCallResult.DO_NOT_ACCEPT)
    [rejected] = of_type(drain(link.client), CallRejected)
    assert rejected.direction is CallDirection.INCOMING and rejected.peer_call_id == 77


def test_client_accepts_incoming_calls_when_configured() -> None:
    link = Link(client_config=ControlConfig(role=Role.CLIENT, accept_incoming_calls=True, window=16)).up()
    now = link.now
    link.client.receive_data(IncomingCallRequest(call_id=77, dialing_number="0123").encode(), now)
    [reply] = split_messages(link.client.data_to_send())
    assert isinstance(reply, IncomingCallReply)
    assert reply.result_code == IncomingCallResult.CONNECT and reply.peer_call_id == 77
    assert reply.packet_receive_window == 16
    ours = reply.call_id
    link.client.receive_data(
        IncomingCallConnected(peer_call_id=ours, connect_speed=64000, packet_receive_window=8).encode(), now
    )
    [est] = of_type(drain(link.client), CallEstablished)
    assert est.call.call_id == ours and est.call.peer_call_id == 77
    assert est.call.direction is CallDirection.INCOMING and est.call.peer_window == 8
    assert est.call.connect_speed == 64000 and est.call.phone_number == "0123"
    # The PAC hangs up with Call-Disconnect-Notify carrying its own ID.
    link.client.receive_data(CallDisconnectNotify(call_id=77, result_code=1).encode(), now)
    [cleared] = of_type(drain(link.client), CallCleared)
    assert cleared.call_id == ours and cleared.initiated_by is Initiator.REMOTE


def test_server_answers_incoming_call_request_as_protocol_error() -> None:
    link = Link().up()
    link.server.receive_data(IncomingCallRequest(call_id=5).encode(), link.now)
    [reply] = split_messages(link.server.data_to_send())
    assert reply == IncomingCallReply(call_id=0, peer_call_id=5, result_code=IncomingCallResult.GENERAL_ERROR,
                                      error_code=GeneralError.BAD_VALUE)
    [violation] = of_type(drain(link.server), ProtocolViolation)
    assert violation.code == GeneralError.BAD_VALUE
    assert link.server.stats.protocol_errors == 1


def test_client_answers_outgoing_call_request_as_protocol_error() -> None:
    link = Link().up()
    link.client.receive_data(OutgoingCallRequest(call_id=5).encode(), link.now)
    [reply] = split_messages(link.client.data_to_send())
    assert isinstance(reply, OutgoingCallReply)
    assert reply.result_code == OutgoingCallResult.GENERAL_ERROR
    assert reply.error_code == GeneralError.BAD_VALUE


def test_call_request_before_start_is_not_connected() -> None:
    server = ControlConnection(SERVER, now=0.0, rng=random.Random(1))
    server.receive_data(OutgoingCallRequest(call_id=9).encode(), 1.0)
    [reply] = split_messages(server.data_to_send())
    assert reply == OutgoingCallReply(call_id=0, peer_call_id=9, result_code=OutgoingCallResult.GENERAL_ERROR,
                                      error_code=GeneralError.NOT_CONNECTED)
    assert server.state is ConnectionState.WAIT_START_REQUEST


def test_duplicate_peer_call_id_is_refused() -> None:
    link = Link().up()
    link.server.receive_data(OutgoingCallRequest(call_id=3, packet_receive_window=3).encode(), link.now)
    link.server.receive_data(OutgoingCallRequest(call_id=3, packet_receive_window=3).encode(), link.now)
    messages = split_messages(link.server.data_to_send())
    [reply] = messages
    assert isinstance(reply, OutgoingCallReply) and reply.error_code == GeneralError.BAD_CALL_ID
    events = drain(link.server)
    assert len(of_type(events, CallRequested)) == 1 and len(of_type(events, CallRejected)) == 1


def test_call_disconnect_for_unknown_call_is_ignored() -> None:
    link = Link().up()
    link.client.receive_data(CallDisconnectNotify(call_id=999).encode(), link.now)
    assert link.client.data_to_send() == b""
    [violation] = of_type(drain(link.client), ProtocolViolation)
    assert violation.code == GeneralError.BAD_CALL_ID


# --- interop shapes --------------------------------------------------------------------------------


def test_server_accepts_pptp_linux() -> None:
    """pptp-linux's SCCRQ and OCRQ field values, hand-built."""
    server = ControlConnection(SERVER, now=0.0, rng=random.Random(1))
    sccrq = StartControlConnectionRequest(framing_capabilities=3, bearer_capabilities=3, max_channels=65535,
                                          firmware_revision=1, host_name="local", vendor="cananian")
    ocrq = OutgoingCallRequest(call_id=0x7A31, call_serial_number=0, minimum_bps=2400, maximum_bps=10_000_000,
                               bearer_type=3, framing_type=3, packet_receive_window=3)
    server.receive_data(sccrq.encode(), 0.0)
    server.receive_data(ocrq.encode(), 1.0)  # pptp-linux sleeps 1 s in between
    [up] = of_type(events := drain(server), ConnectionEstablished)
    assert up.peer.vendor == "cananian" and up.peer.max_channels == 65535
    [request] = of_type(events, CallRequested)
    assert request.peer_call_id == 0x7A31 and request.peer_window == 3
    info = server.accept_call(1.0, request.call_id)
    assert info.peer_window == 3 and info.our_window == 64
    replies = split_messages(server.data_to_send())
    assert isinstance(replies[-1], OutgoingCallReply)
    assert replies[-1].peer_call_id == 0x7A31 and replies[-1].call_id == request.call_id


def test_client_accepts_pptpd() -> None:
    """pptpd's SCCRP (framing 0, bearer 0, max channels 1, vendor linux), call ID 0, and its habit of
    closing TCP instead of answering Call-Clear-Request."""
    client = ControlConnection(CLIENT, now=0.0, rng=random.Random(1))
    client.data_to_send()
    client.receive_data(StartControlConnectionReply(framing_capabilities=0, bearer_capabilities=0,
                                                    max_channels=1, firmware_revision=1, host_name="local",
                                                    vendor="linux").encode(), 0.1)
    call_id = client.open_call(0.2)
    [ocrq] = split_messages(client.data_to_send())
    assert isinstance(ocrq, OutgoingCallRequest) and ocrq.call_id == call_id
    assert ocrq.packet_receive_window == 64
    client.receive_data(OutgoingCallReply(call_id=0, peer_call_id=call_id, packet_receive_window=64,
                                          connect_speed=100_000_000).encode(), 0.3)
    [est] = of_type(drain(client), CallEstablished)
    assert est.call.peer_call_id == 0
    client.clear_call(1.0, call_id)
    assert split_messages(client.data_to_send()) == [CallClearRequest(call_id=call_id)]
    client.connection_lost(1.1)
    events = drain(client)
    assert of_type(events, CallCleared)[0].initiated_by is Initiator.LOCAL
    assert closed_event(events).clean


def test_peer_clearing_with_call_clear_request_is_answered() -> None:
    """A PAC that clears with Call-Clear-Request (pptp-linux answers those): CDN back."""
    link = Link().up()
    client_id, server_id = link.call()
    link.client.receive_data(CallClearRequest(call_id=server_id).encode(), link.now)
    assert split_messages(link.client.data_to_send()) == [
        CallDisconnectNotify(call_id=client_id, result_code=DisconnectResult.REQUEST)
    ]
    [cleared] = of_type(drain(link.client), CallCleared)
    assert cleared.initiated_by is Initiator.REMOTE


# --- malformed input -------------------------------------------------------------------------------


def test_bad_magic_closes_at_once() -> None:
    link = Link().up()
    bad = bytearray(EchoRequest(identifier=1).encode())
    bad[4] ^= 0xFF
    link.server.receive_data(bytes(bad), link.now)
    assert link.server.closed
    assert link.server.data_to_send() == b""  # no resynchronisation, no goodbye
    event = closed_event(drain(link.server))
    assert event.cause is CloseCause.LOSS_OF_SYNC and event.code == GeneralError.BAD_FORMAT
    assert link.server.stats.malformed == 1


def test_wrong_length_for_type_sends_stop() -> None:
    link = Link().up()
    # framing is intact (length 20, good magic) but an Echo-Request is 16 bytes
    frame = b"\x00\x14\x00\x01\x1a\x2b\x3c\x4d\x00\x05\x00\x00" + b"\x00" * 8
    link.server.receive_data(frame, link.now)
    [stop] = split_messages(link.server.data_to_send())
    assert stop == StopControlConnectionRequest(reason=StopReason.NONE)
    events = drain(link.server)
    [violation] = of_type(events, ProtocolViolation)
    assert violation.code == GeneralError.BAD_FORMAT and violation.message_type == 5
    link.server.receive_data(StopControlConnectionReply().encode(), link.now)
    event = closed_event(drain(link.server))
    assert event.cause is CloseCause.PROTOCOL_ERROR and event.code == GeneralError.BAD_FORMAT


def test_unknown_message_type_is_counted_and_ignored() -> None:
    link = Link().up()
    link.server.receive_data(b"\x00\x10\x00\x01\x1a\x2b\x3c\x4d\x00\x63\x00\x00\x01\x02\x03\x04", link.now)
    assert link.server.data_to_send() == b""
    [violation] = of_type(drain(link.server), ProtocolViolation)
    assert violation.message_type == 99
    assert link.server.stats.unknown_messages == 1
    assert link.server.state is ConnectionState.ESTABLISHED


def test_byte_at_a_time_delivery() -> None:
    client = ControlConnection(CLIENT, now=0.0, rng=random.Random(1))
    server = ControlConnection(SERVER, now=0.0, rng=random.Random(2))
    for b in client.data_to_send():
        server.receive_data(bytes([b]), 0.0)
    for b in server.data_to_send():
        client.receive_data(bytes([b]), 0.0)
    assert client.state is server.state is ConnectionState.ESTABLISHED


def _unlimited() -> ControlConfig:
    """A server that answers any number of Echo-Requests (to test the byte-level caps alone)."""
    return ControlConfig(role=Role.SERVER, peer_message_rate=1e9, peer_message_burst=10**6,
                         flood_limit=10**6)


def test_large_input_is_processed_in_slices() -> None:
    link = Link(server_config=_unlimited()).up()
    burst = EchoRequest(identifier=1).encode() * 5000  # 80 kB in one read
    link.server.receive_data(burst, link.now)
    assert len(split_messages(link.server.data_to_send())) == 5000
    assert link.server.stats.echo_requests_received == 5000


def test_answer_backlog_is_capped() -> None:
    link = Link(server_config=_unlimited()).up()
    flood = EchoRequest(identifier=1).encode() * (MAX_PENDING_OUTPUT // 20 + 100)
    link.server.receive_data(flood, link.now)  # the adapter never drains in between
    assert link.server.closed
    event = closed_event(drain(link.server))
    assert event.cause is CloseCause.PROTOCOL_ERROR and "floods" in event.reason
    assert len(link.server.data_to_send()) <= MAX_PENDING_OUTPUT + 4096 * 2


def test_event_queue_is_capped() -> None:
    link = Link(server_config=_unlimited()).up()
    unknown = b"\x00\x0c\x00\x01\x1a\x2b\x3c\x4d\x00\x63\x00\x00"
    link.server.receive_data(unknown * (MAX_PENDING_EVENTS + 10), link.now)
    assert link.server.stats.events_dropped == 10
    assert len(drain(link.server)) == MAX_PENDING_EVENTS
    assert link.server.stats.unknown_messages == MAX_PENDING_EVENTS + 10


def test_input_after_close_is_ignored() -> None:
    link = Link().up()
    link.server.connection_lost(link.now)
    drain(link.server)
    link.server.receive_data(EchoRequest(identifier=1).encode(), link.now)
    link.server.handle_timer(link.now + 1000)
    assert link.server.data_to_send() == b"" and drain(link.server) == []
    assert link.server.stats.bytes_ignored == 16


# --- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host_name": "h" * 65},
        {"vendor": "v\x00"},
        {"window": 0},
        {"max_calls": 0},
        {"echo_interval": 0.0},
        {"echo_max_wait": -1.0},
        {"start_timeout": 0.0},
        {"minimum_bps": 10, "maximum_bps": 5},
        {"firmware_revision": 70000},
        {"max_channels": -1},
        {"role": "server"},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"role": Role.SERVER, **kwargs}
    with pytest.raises(ConfigError):
        ControlConfig(**args)  # type: ignore[arg-type]


def test_a_clear_crossing_our_disconnect_is_not_a_violation() -> None:
    """The server disconnects a call while the client clears it: the client's
    Call-Clear-Request arrives for a call the server has already forgotten (RFC 2637 §2.12/2.13
    allow both ends to end a call at once)."""
    link = Link().up()
    client_id, server_id = link.call()
    link.server.clear_call(link.now, server_id)
    link.client.clear_call(link.now, client_id)
    link.pump()
    assert not of_type(link.server_events, ProtocolViolation)
    assert link.server.stats.crossed_clears == 1
    # A clear for a call that never existed still is one.
    link.server.receive_data(CallClearRequest(call_id=4242).encode(), link.now)
    assert [v.code for v in of_type(drain(link.server), ProtocolViolation)] == [GeneralError.BAD_CALL_ID]


def test_an_echo_flood_is_answered_only_at_the_configured_rate() -> None:
    cfg = ControlConfig(role=Role.SERVER, peer_message_rate=10.0, peer_message_burst=20, flood_limit=10**6)
    link = Link(server_config=cfg).up()
    link.server.data_to_send()
    echo = EchoRequest(identifier=7).encode()
    link.server.receive_data(echo * 1000, link.now)
    assert len(split_messages(link.server.data_to_send())) == 20  # the burst
    # One second later: ten more tokens.
    link.server.receive_data(echo * 1000, link.now + 1.0)
    assert len(split_messages(link.server.data_to_send())) == 10
    assert link.server.stats.rate_limited == 1970 and not link.server.closed


def test_unknown_messages_cost_bounded_events_and_a_flood_closes() -> None:
    cfg = ControlConfig(role=Role.SERVER, peer_message_rate=10.0, peer_message_burst=20, flood_limit=500)
    link = Link(server_config=cfg).up()
    drain(link.server)
    unknown = b"\x00\x0c\x00\x01\x1a\x2b\x3c\x4d\x00\x63\x00\x00"
    link.server.receive_data(unknown * 400, link.now)
    violations = of_type(drain(link.server), ProtocolViolation)
    assert len(violations) == 20 and not link.server.closed
    link.server.receive_data(unknown * 400, link.now)
    events = drain(link.server)
    assert link.server.closed
    event = closed_event(events)
    assert event.cause is CloseCause.PROTOCOL_ERROR and "floods us" in event.reason


def test_a_peer_at_a_sane_rate_is_never_limited() -> None:
    link = Link().up()
    for i in range(600):  # one Echo-Request a second for ten minutes
        link.server.receive_data(EchoRequest(identifier=i).encode(), link.now + i)
    assert link.server.stats.rate_limited == 0
