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

from pptpkit.errors import ConfigError, PptpkitError

__all__ = ["TARGETS", "chunks", "session_cases"]

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


def _control_engine(role_server: bool, established: bool) -> object:
    from pptpkit.control import (
        CallIdAllocator,
        CallRequested,
        ControlConfig,
        ControlConnection,
        Role,
    )

    ids = CallIdAllocator(rng=random.Random(1))
    server = ControlConnection(ControlConfig(role=Role.SERVER, accept_incoming_calls=True), now=0.0,
                               rng=random.Random(2), call_ids=ids)
    if not established:
        return server
    client = ControlConnection(ControlConfig(role=Role.CLIENT, accept_incoming_calls=True), now=0.0,
                               rng=random.Random(3))
    for _ in range(3):
        server.receive_data(client.data_to_send(), 0.0)
        client.receive_data(server.data_to_send(), 0.0)
    client.open_call(0.0)
    server.receive_data(client.data_to_send(), 0.0)
    while (event := server.next_event()) is not None:
        if isinstance(event, CallRequested):
            server.accept_call(0.0, event.call_id)
    client.receive_data(server.data_to_send(), 0.0)
    while client.next_event() is not None:
        pass
    return server if role_server else client


def _feed_control(engine: object, data: bytes) -> None:
    from pptpkit.control import ControlConnection

    assert isinstance(engine, ControlConnection)
    now = 0.0
    for piece in chunks(data):
        engine.receive_data(piece, now)
        now += 7.0
        engine.handle_timer(now)
        engine.data_to_send()
        while engine.next_event() is not None:
            pass


def control_fresh_server(data: bytes) -> None:
    _feed_control(_control_engine(True, False), data)


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


def gre_demux(data: bytes) -> None:
    from pptpkit.gre import GreDemux

    demux = GreDemux()
    demux.register("192.0.2.2", 7, lambda packet, now: None)
    demux.register("192.0.2.2", 8, lambda packet, now: None, borrow=True)
    for piece in chunks(data):
        demux.dispatch(piece, 0.0)


# -- PPP --------------------------------------------------------------------------------------------


def hdlc_stream(data: bytes) -> None:
    from pptpkit.ppp.hdlc import HdlcDecoder

    decoder = HdlcDecoder(max_frame=1600)
    for piece in chunks(data):
        decoder.feed(piece)


def session_cases() -> list[tuple[object, object]]:
    """(authentication method, MPPE policy) of each recorded conversation; a session seed's
    first octet picks one, so the recorded peer's answers fit our deterministic challenges."""
    from pptpkit.auth.methods import AuthMethod
    from pptpkit.ppp.session_config import MppePolicy

    return [(AuthMethod.MSCHAP_V2, MppePolicy(stateful=True)), (AuthMethod.MSCHAP_V2, MppePolicy()),
            (AuthMethod.PAP, MppePolicy.nomppe()), (AuthMethod.CHAP_MD5, MppePolicy.nomppe()),
            (AuthMethod.EAP, MppePolicy.nomppe()), (AuthMethod.MSCHAP_V1, MppePolicy())]


def _session(server: bool, case: int) -> object:
    # The PPP tests' configurations: their random sources are seeded, so a conversation
    # recorded between two such sessions authenticates again when replayed.
    from session_harness import client_config, server_config

    from pptpkit.ppp.session import PppSession

    cases = session_cases()
    method, mppe = cases[case % len(cases)]
    config = (server_config(method, mppe=mppe, ipv6=True) if server  # type: ignore[arg-type]
              else client_config(mppe=mppe, ipv6=True))  # type: ignore[arg-type]
    session = PppSession(config, 0.0)
    session.open(0.0)
    return session


def _feed_session(session: object, data: bytes) -> None:
    from pptpkit.ppp.session import PppSession

    assert isinstance(session, PppSession)
    now = 0.0
    for piece in chunks(data):
        session.receive_frame(piece, now)
        session.send_packet(b"\x45" + bytes(19), now)
        now += 0.05
        session.handle_timer(now)
        session.frames_to_send()
        while session.next_event() is not None:
            pass


def ppp_session_server(data: bytes) -> None:
    if data:
        _feed_session(_session(True, data[0]), data[1:])


def ppp_session_client(data: bytes) -> None:
    if data:
        _feed_session(_session(False, data[0]), data[1:])


# -- authentication ------------------------------------------------------------------------------


def _auth(method_index: int, authenticator: bool, data: bytes) -> None:
    from pptpkit.auth.base import AuthenticatorConfig, PeerConfig, Role
    from pptpkit.auth.factory import create_engine
    from pptpkit.auth.methods import AuthMethod
    from pptpkit.auth.secrets import StaticSecrets

    methods = list(AuthMethod)
    method = methods[method_index % len(methods)]
    config: AuthenticatorConfig | PeerConfig
    if authenticator:
        config = AuthenticatorConfig(name="srv", secrets=StaticSecrets({("*", "*"): "pw"}), mschap_retries=2)
    else:
        config = PeerConfig(username="u", password="pw", mschap_retries=2)
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
    from pptpkit.crypto.mppe import MppeConfig, MppeDecryptor

    for stateless in (True, False):
        decryptor = MppeDecryptor(MppeConfig(start_key=bytes(range(16)), stateless=stateless,
                                             max_stateless_jump=64))
        for piece in chunks(data, 16):
            decryptor.decrypt(piece)
            decryptor.take_reset_request()


# -- the call manager's protocol, config files ----------------------------------------------------


def callmgr_codec(data: bytes) -> None:
    from pptpkit.compat.callmgr.codec import decode_message

    with contextlib.suppress(PptpkitError):
        decode_message(data)


def pptpd_conf(data: bytes) -> None:
    from pptpkit.compat.pptpdconf import parse_pptpd_conf

    with contextlib.suppress(ConfigError):
        parse_pptpd_conf(data.decode("latin-1"), "fuzz.conf")


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
    "callmgr_codec": callmgr_codec,
    "pptpd_conf": pptpd_conf,
    "pppd_options": pppd_options,
    "chap_secrets": chap_secrets,
}
