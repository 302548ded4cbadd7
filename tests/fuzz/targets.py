"""Fuzz targets: one per decoder and engine a peer (or a config file) can feed.

Each target takes the fuzzer's bytes and drives one piece of pptpkit with them.  The contract
under test is the project's: only :class:`~pptpkit.errors.PptpkitError` may escape (config
parsers: :class:`~pptpkit.errors.ConfigError`, which is one), and an engine fed garbage never
raises at all.  Anything else is a bug, and the fuzzer reports it with the input.

Engines are driven past their first state where that is what real traffic does: the control
engine after a valid Start exchange and with a call up, the PPP session after its LCP opens.
Several inputs per run are cut from the fuzzer's bytes with a two-octet length prefix (see
:func:`chunks`), so one input can be a whole conversation.  The seed corpora under
``tests/fuzz/corpus/`` are recorded from real engine pairs (``tools/fuzz_seeds.py``).
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pptpkit.errors import ConfigError, PptpkitError

__all__ = ["TARGETS", "chunks", "ops", "session_cases"]

# The PPP tests' session configurations (tests/unit/ppp/session_harness.py) and the shared
# engine-pair helper they build on (tests/enginepair.py).
_TESTS = Path(__file__).resolve().parents[1]
for _folder in (_TESTS, _TESTS / "unit" / "ppp"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

Target = Callable[[bytes], None]


def chunks(data: bytes, limit: int = 64) -> Iterator[bytes]:
    """Split ``data`` into inputs: two octets of length, then that many octets (fewer at the
    end), at most ``limit`` of them."""
    i = 0
    n = 0
    while i < len(data) and n < limit:
        size = int.from_bytes(data[i : i + 2], "big") if i + 2 <= len(data) else len(data) - i
        i += 2
        yield data[i : i + size]
        i += size
        n += 1


# -- control connection (RFC 2637) -------------------------------------------------------------


def control_messages(data: bytes) -> None:
    from pptpkit.control import decode_message

    with contextlib.suppress(PptpkitError):
        decode_message(data)


def control_pair() -> tuple[Any, Any]:
    """A fresh (server, client) pair of control engines with seeded random sources, so the
    conversation ``tools/fuzz_seeds.py`` records between them (call IDs, serial numbers) fits
    the engines the targets build."""
    from pptpkit.control import CallIdAllocator, ControlConfig, ControlConnection, Role

    server = ControlConnection(ControlConfig(role=Role.SERVER, accept_incoming_calls=True), now=0.0,
                               rng=random.Random(2), call_ids=CallIdAllocator(rng=random.Random(1)))
    client = ControlConnection(ControlConfig(role=Role.CLIENT, accept_incoming_calls=True), now=0.0,
                               rng=random.Random(3))
    return server, client


def control_establish(server: Any, client: Any) -> tuple[list[bytes], list[bytes]]:
    """The Start exchange and one outgoing call between ``control_pair()``'s engines; returns
    what each side received (to the server, to the client)."""
    from pptpkit.control import CallRequested

    to_server: list[bytes] = []
    to_client: list[bytes] = []
    for _ in range(3):
        to_server.append(client.data_to_send())
        server.receive_data(to_server[-1], 0.0)
        to_client.append(server.data_to_send())
        client.receive_data(to_client[-1], 0.0)
    client.open_call(0.0)
    to_server.append(client.data_to_send())
    server.receive_data(to_server[-1], 0.0)
    while (event := server.next_event()) is not None:
        if isinstance(event, CallRequested):
            server.accept_call(0.0, event.call_id)
    to_client.append(server.data_to_send())
    client.receive_data(to_client[-1], 0.0)
    while client.next_event() is not None:
        pass
    return [b for b in to_server if b], [b for b in to_client if b]


def _control_engine(role_server: bool, established: bool) -> Any:
    server, client = control_pair()
    if not established:
        client.data_to_send()  # its Start-Control-Connection-Request went out
        return server if role_server else client
    control_establish(server, client)
    return server if role_server else client


def ops(data: bytes, limit: int = 64) -> Iterator[tuple[int, bytes]]:
    """Split ``data`` into (op, input) pairs: an op octet, then an input as :func:`chunks`
    cuts it."""
    i = 0
    n = 0
    while i < len(data) and n < limit:
        op = data[i]
        size = int.from_bytes(data[i + 1 : i + 3], "big")
        yield op, data[i + 3 : i + 3 + size]
        i += 3 + size
        n += 1


def _control_action(engine: Any, op: int, now: float) -> None:
    """What the application may do between two receptions: op's high bits pick it, its low
    bits an argument.  Only :class:`StateError` (the wrong moment for it) may come back."""
    from pptpkit.control import Role
    from pptpkit.errors import StateError

    calls = sorted(engine.calls)
    call_id = calls[op % len(calls)] if calls else op
    action = op >> 4
    with contextlib.suppress(StateError):
        if action == 1:
            if engine.role is Role.CLIENT:
                engine.open_call(now)
        elif action == 2:
            engine.clear_call(now, call_id)
        elif action == 3:
            engine.set_link_info(now, call_id, send_accm=op * 0x01010101, receive_accm=0)
        elif action == 4:
            engine.send_wan_error(now, call_id, crc_errors=op)
        elif action == 5:
            engine.stop(now, op & 0x0F)
        elif action == 6:
            engine.connection_lost(now)


def _feed_control(engine: Any, data: bytes) -> None:
    """Each op octet: what happens first (low 3 bits: seconds that pass, with the engine's
    timers; high bits: an application action, see :func:`_control_action`), then its input is
    the peer's next bytes.  A call request is accepted or refused by the op's bit 3."""
    from pptpkit.control import CallRequested
    from pptpkit.errors import StateError

    now = 0.0
    for op, piece in ops(data):
        now += (op & 0x07) * 7.0
        engine.handle_timer(now)
        _control_action(engine, op, now)
        engine.receive_data(piece, now)
        engine.data_to_send()
        while (event := engine.next_event()) is not None:
            if isinstance(event, CallRequested):
                # The same bytes may have closed the connection after asking for the call:
                # answering is then a StateError, which the server expects (pptp/server.py).
                with contextlib.suppress(StateError):
                    if op & 0x08:
                        engine.reject_call(now, event.call_id)
                    else:
                        engine.accept_call(now, event.call_id)
        engine.get_timer()


def control_fresh_server(data: bytes) -> None:
    _feed_control(_control_engine(True, False), data)


def control_fresh_client(data: bytes) -> None:
    # A client that has sent its Start-Control-Connection-Request and waits for the reply.
    _feed_control(_control_engine(False, False), data)


def control_established_server(data: bytes) -> None:
    _feed_control(_control_engine(True, True), data)


def control_established_client(data: bytes) -> None:
    _feed_control(_control_engine(False, True), data)


# -- GRE (RFC 2637 section 4) --------------------------------------------------------------------


def gre_packet(data: bytes) -> None:
    from pptpkit.gre import GrePacket

    with contextlib.suppress(PptpkitError):
        GrePacket.decode(data)


def gre_call(data: bytes) -> None:
    from pptpkit.gre import GreCall, GreCallConfig

    call = GreCall(GreCallConfig(call_id=1, peer_call_id=2, reorder_buffer=8, max_seq_jump=64))
    now = 0.0
    for piece in chunks(data):
        call.receive_datagram(piece, now)
        now += 0.03
        call.handle_timer(now)
        call.send(b"x", now)
        call.datagrams_to_send()


class HandlerError(AssertionError):
    """An exception a GRE handler raised under the demux (which logs and swallows those, so the
    target re-raises them: a fuzzer would never see them otherwise)."""


def gre_demux(data: bytes) -> None:
    # Whole IPv4 datagrams, as the raw socket returns them, through the demux into a GreCall
    # (the path the server's GRE reader takes).
    from pptpkit.gre import GreCall, GreCallConfig, GreDemux

    call = GreCall(GreCallConfig(call_id=7, peer_call_id=9, reorder_buffer=8, max_seq_jump=64))
    failures: list[BaseException] = []

    def handler(packet: bytes, now: float) -> None:
        try:
            call.receive_datagram(packet, now)
        except Exception as exc:  # the demux would swallow it: kept, re-raised below
            failures.append(exc)
            raise

    demux = GreDemux(max_calls=4)
    demux.on_unknown_call = lambda peer, call_id: None
    demux.register("192.0.2.2", 7, handler)
    demux.register("192.0.2.2", 8, handler, borrow=True)
    now = 0.0
    for piece in chunks(data):
        demux.dispatch(piece, now)
        if failures:
            raise HandlerError("the GRE handler raised") from failures[0]
        now += 0.03
        call.handle_timer(now)
        call.send(b"x", now)
        call.datagrams_to_send()


# -- PPP --------------------------------------------------------------------------------------------


class _Stream:
    """The part of :class:`~pptpkit.io.pty.FdStream` :class:`HdlcStreamBridge` uses, in memory."""

    def __init__(self) -> None:
        self.on_data: Callable[[bytes], None] | None = None
        self.written: list[bytes] = []

    def start(self, on_data: Callable[[bytes], None], on_close: object) -> None:
        self.on_data = on_data

    def write(self, data: bytes) -> bool:
        self.written.append(bytes(data))
        return True

    def close(self) -> None:
        pass


def hdlc_stream(data: bytes) -> None:
    # The byte stream pppd (or pptp-linux) writes, through the bridge's deframer.  Every frame
    # that comes out must survive our own framer and deframer unchanged.
    from pptpkit.io.hdlcstream import HdlcStreamBridge
    from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame

    if not data:
        return
    frames: list[bytes] = []
    stream = _Stream()
    bridge = HdlcStreamBridge(stream, on_frame=frames.append, max_frame=1600)  # type: ignore[arg-type]
    bridge.start()
    assert stream.on_data is not None
    accm = int.from_bytes(data[:1], "big") * 0x01010101 & 0xFFFFFFFF
    bridge.set_accm(accm)
    for piece in chunks(data[1:]):
        stream.on_data(piece)
    for frame in frames:
        assert len(frame) <= 1600, len(frame)
        bridge.send_frame(frame)
        again = HdlcDecoder(max_frame=1600).feed(encode_frame(frame, accm))
        assert again == [frame], (frame, again)


def session_cases() -> list[tuple[object, object]]:
    """(authentication method, MPPE policy) of each recorded conversation; a session input's
    first octet picks one."""
    from pptpkit.auth.methods import AuthMethod
    from pptpkit.ppp.session_config import MppePolicy

    return [(AuthMethod.MSCHAP_V2, MppePolicy(stateful=True)), (AuthMethod.MSCHAP_V2, MppePolicy()),
            (AuthMethod.PAP, MppePolicy.nomppe()), (AuthMethod.CHAP_MD5, MppePolicy.nomppe()),
            (AuthMethod.EAP, MppePolicy.nomppe()), (AuthMethod.MSCHAP_V1, MppePolicy())]


def _session_configs(case: int) -> tuple[object, object]:
    # The PPP tests' configurations (tests/unit/ppp/session_harness.py): their random sources
    # are seeded, so a conversation recorded between two such sessions authenticates again
    # when it is replayed into a fresh one.
    from session_harness import client_config, server_config

    cases = session_cases()
    method, mppe = cases[case % len(cases)]
    return (client_config(mppe=mppe, ipv6=True),  # type: ignore[arg-type]
            server_config(method, mppe=mppe, ipv6=True))  # type: ignore[arg-type]


def ppp_conversations() -> list[tuple[list[bytes], list[bytes]]]:
    """Per session case, the frames (to the server, to the client) of a real session pair on
    the shared engine-pair helper: LCP, authentication, CCP/MPPE, IPCP, IPv6CP, then data."""
    global _CONVERSATIONS
    if _CONVERSATIONS is None:
        from session_harness import SessionPair

        out = []
        for case in range(len(session_cases())):
            client, server = _session_configs(case)
            pair = SessionPair(client, server)  # type: ignore[arg-type]
            pair.start()
            pair.run(until=pair.now + 5)
            for i in range(3):
                pair.send("client", bytes([0x45]) + bytes(19) + bytes([i]))
                pair.send("server", bytes([0x45]) + bytes(19) + bytes([i]))
            pair.pump()
            out.append((list(pair.wires["cs"].frames), list(pair.wires["sc"].frames)))
        _CONVERSATIONS = out
    return _CONVERSATIONS


_CONVERSATIONS: list[tuple[list[bytes], list[bytes]]] | None = None


def _feed_session(server: bool, data: bytes) -> object:
    """Octet 0 picks the session case, octet 1 how many frames of the recorded conversation the
    session gets first (so the fuzzer starts from any phase, up to data under MPPE, without
    having to rediscover the challenge answers); the rest are the fuzzer's frames."""
    from pptpkit.ppp.session import PppSession

    if len(data) < 2:
        return None
    case = data[0] % len(session_cases())
    recorded = ppp_conversations()[case][0 if server else 1]
    depth = data[1] % (len(recorded) + 1)
    config = _session_configs(case)[1 if server else 0]
    session = PppSession(config, 0.0)  # type: ignore[arg-type]
    session.open(0.0)
    now = 0.0
    for piece in [*recorded[:depth], *chunks(data[2:])]:
        session.receive_frame(piece, now)
        session.send_packet(b"\x45" + bytes(19), now)
        now += 0.05
        session.handle_timer(now)
        session.frames_to_send()
        while session.next_event() is not None:
            pass
    return session


def ppp_session_server(data: bytes) -> None:
    _feed_session(True, data)


def ppp_session_client(data: bytes) -> None:
    _feed_session(False, data)


# -- authentication ------------------------------------------------------------------------------


def _auth(method_index: int, authenticator: bool, data: bytes) -> None:
    # The session harness's names, secrets and seeded random sources, so the authentication
    # packets recorded from the PPP conversations verify (success paths included).
    from session_harness import PASSWORD, SERVER_NAME, USER, bytes_source

    from pptpkit.auth.base import AuthenticatorConfig, PeerConfig, Role
    from pptpkit.auth.factory import create_engine
    from pptpkit.auth.methods import AuthMethod
    from pptpkit.auth.secrets import StaticSecrets

    methods = list(AuthMethod)
    method = methods[method_index % len(methods)]
    config: AuthenticatorConfig | PeerConfig
    if authenticator:
        config = AuthenticatorConfig(name=SERVER_NAME, secrets=StaticSecrets({(USER, SERVER_NAME): PASSWORD}),
                                     random=bytes_source(1), mschap_retries=2)
    else:
        config = PeerConfig(username=USER, password=PASSWORD, random=bytes_source(4), mschap_retries=2)
    engine = create_engine(method, Role.AUTHENTICATOR if authenticator else Role.PEER, config, 0.0)
    engine.start(0.0)
    now = 0.0
    for piece in chunks(data):
        engine.receive(piece, now)
        now += 1.5
        engine.handle_timer(now)
        engine.packets_to_send()
        while engine.next_event() is not None:
            pass


def auth_authenticator(data: bytes) -> None:
    if data:
        _auth(data[0], True, data[1:])


def auth_peer(data: bytes) -> None:
    if data:
        _auth(data[0], False, data[1:])


# -- MPPE --------------------------------------------------------------------------------------


def mppe_decrypt(data: bytes) -> None:
    # Arbitrary packet bodies into a receiver, stateless and stateful (with the Reset-Request a
    # lost place asks for taken each time, as the CCP layer does).
    from pptpkit.crypto.mppe import MppeConfig, MppeDecryptor

    for stateless in (True, False):
        decryptor = MppeDecryptor(MppeConfig(start_key=bytes(range(16)), stateless=stateless,
                                             max_stateless_jump=64))
        for piece in chunks(data, 16):
            decryptor.decrypt(piece)
            decryptor.take_reset_request()


class MppeDesync(AssertionError):
    """A genuine MPPE packet that should have decrypted did not, or decrypted wrong."""


def mppe_link(data: bytes) -> None:
    """A sender and a receiver of one MPPE direction over a hostile link, with CCP resets.

    Octet 0 picks the mode (40/56/128-bit, stateless or stateful, Linux or RFC 3078 flush
    semantics); then each op octet: deliver the sender's next packet, lose some, deliver a
    forged or corrupted one, or let the receiver's Reset-Request reach the sender (or not).
    The oracle: while only genuine packets arrived (losses allowed), every packet the receiver
    should be able to read decrypts to exactly what was sent; a stateful receiver that lost its
    place is back in step with the first packet after the sender got its Reset-Request.
    """
    from pptpkit.crypto.mppe import MppeConfig, MppeDecryptor, MppeEncryptor

    if not data:
        return
    mode = data[0]
    bits = (40, 56, 128)[mode % 3]
    stateless = bool(mode & 0x04)
    jump = 1 + (mode >> 3) % 8 if mode & 0x80 else 64
    key = bytes(range(16)) if bits == 128 else bytes(range(8))
    sender = MppeEncryptor(MppeConfig(start_key=key, key_bits=bits, stateless=stateless,
                                      flushed_means_rekey=not mode & 0x08))
    receiver = MppeDecryptor(MppeConfig(start_key=key, key_bits=bits, stateless=stateless,
                                        flushed_means_rekey=not mode & 0x08, max_stateless_jump=jump))
    linux = not mode & 0x08
    clean = True  # only genuine packets so far (losses allowed): the oracle applies
    lost = 0  # genuine packets lost since the last one delivered
    reset_asked = False  # the receiver wants a Reset-Request sent
    sent = 0
    last = b""
    i = 1
    while i < len(data) and sent < 2000:
        op = data[i]
        arg = data[i + 1] if i + 1 < len(data) else 0
        i += 2
        kind = op % 6
        if kind <= 1:  # the sender's next packet arrives
            payload = bytes([0x45, op, arg]) + bytes(arg % 40)
            last = sender.encrypt(0x21, payload)
            sent += 1
            flushed = bool(last[0] & 0x80)
            if stateless:
                readable = lost + 1 <= jump
                # Beyond the jump the receiver refuses the count, by design, until it wraps.
                clean = clean and readable
            else:
                readable = flushed or (lost == 0 and not receiver.discarding)
            got = receiver.decrypt(last)
            if clean and readable and got != (0x21, payload):
                raise MppeDesync(f"mode {mode:#x}, packet {sent} ({last[:2].hex()}): {got!r}")
            lost = 0
        elif kind == 2:  # a run of the sender's packets is lost
            run = 1 + arg % 64
            sent += run
            lost += run
            for _ in range(run):
                last = sender.encrypt(0x21, b"\x45")
                if linux and not stateless and last[0] & 0x80 and last[1] != 0xFF:
                    # A lost answer to a reset costs Linux-mode peers their sync (the module's
                    # notes): both sides change key per FLUSHED and the receiver missed one.
                    clean = False
        elif kind == 3:  # a Reset-Request reaches the sender (asked for, or a stray one)
            if reset_asked or arg & 1:
                sender.reset()
                reset_asked = False
        elif kind == 4:  # a forged packet
            receiver.decrypt(bytes([op & 0xF0 | arg & 0x0F, arg]) + data[i : i + arg % 32])
            i += arg % 32
            clean = False
        else:  # the last packet again, replayed or corrupted
            if last:
                body = bytearray(last)
                body[arg % len(body)] ^= op >> 3
                receiver.decrypt(bytes(body))
                clean = False
        reset_asked = receiver.take_reset_request() or reset_asked


# -- the call manager's protocol, config files ----------------------------------------------------


def callmgr_codec(data: bytes) -> None:
    from pptpkit.compat.callmgr.codec import MsgType, decode_message
    from pptpkit.compat.callmgr.member import _peer_from

    with contextlib.suppress(PptpkitError):
        msg = decode_message(data)
        # What a member makes of the manager's description of the server.
        peer = msg.data.get("peer")
        if msg.type is MsgType.OPENED or (isinstance(peer, dict) and peer):
            _peer_from(peer)


def pptpd_conf(data: bytes) -> None:
    from pptpkit.compat.pptpdconf import parse_pptpd_conf

    with contextlib.suppress(ConfigError):
        conf = parse_pptpd_conf(data.decode("latin-1"), "fuzz.conf")
        # The address lists are parsed when the server asks for its pool.
        conf.address_pool()


def pppd_options(data: bytes) -> None:
    from pptpkit.compat.pppdopts import parse_pppd_text

    with contextlib.suppress(ConfigError):
        parse_pppd_text(data.decode("latin-1"), "fuzz-options")


def chap_secrets(data: bytes) -> None:
    from pptpkit.auth.secrets import parse_secrets

    with contextlib.suppress(ConfigError):
        parse_secrets(data.decode("latin-1"), "fuzz-secrets")


TARGETS: dict[str, Target] = {
    "control_messages": control_messages,
    "control_fresh_server": control_fresh_server,
    "control_fresh_client": control_fresh_client,
    "control_established_server": control_established_server,
    "control_established_client": control_established_client,
    "gre_packet": gre_packet,
    "gre_call": gre_call,
    "gre_demux": gre_demux,
    "hdlc_stream": hdlc_stream,
    "ppp_session_server": ppp_session_server,
    "ppp_session_client": ppp_session_client,
    "auth_authenticator": auth_authenticator,
    "auth_peer": auth_peer,
    "mppe_decrypt": mppe_decrypt,
    "mppe_link": mppe_link,
    "callmgr_codec": callmgr_codec,
    "pptpd_conf": pptpd_conf,
    "pppd_options": pppd_options,
    "chap_secrets": chap_secrets,
}
