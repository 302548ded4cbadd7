"""Fuzzing: decoders only raise PptpkitError, engines never raise from receive/handle_timer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from auth_testlib import Link, ScriptedRandom
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pptpkit.auth.base import AuthenticatorConfig, AuthSucceeded, PeerConfig, Role
from pptpkit.auth.chap import ChapChallenge, ChapFailure, ChapResponse, ChapSuccess, decode_chap
from pptpkit.auth.eap import EapMd5, EapMsChapV2, EapPacket, decode_eap
from pptpkit.auth.factory import create_engine
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.mschap import MsChapFailureMessage, MsChapSuccessMessage
from pptpkit.auth.pap import PapAck, PapNak, PapRequest, decode_pap
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.errors import PptpkitError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DECODERS: list[Callable[[bytes], object]] = [
    decode_pap,
    decode_chap,
    decode_eap,
    EapMd5.decode,
    EapMsChapV2.decode,
    MsChapFailureMessage.decode,
    MsChapSuccessMessage.decode,
]

ids = st.integers(0, 255)
short = st.binary(max_size=40)

packets = st.one_of(
    st.builds(PapRequest, identifier=ids, peer_id=short, password=short),
    st.builds(PapAck, identifier=ids, message=short),
    st.builds(PapNak, identifier=ids, message=short),
    st.builds(ChapChallenge, identifier=ids, value=st.binary(min_size=1, max_size=60), name=short),
    st.builds(ChapResponse, identifier=ids, value=st.binary(min_size=1, max_size=60), name=short),
    st.builds(ChapSuccess, identifier=ids, message=short),
    st.builds(ChapFailure, identifier=ids, message=short),
    st.builds(
        EapPacket,
        code=st.sampled_from([1, 2]),
        identifier=ids,
        type=st.integers(1, 255),
        data=short,
    ),
    st.builds(EapPacket, code=st.sampled_from([3, 4]), identifier=ids),
)


@FUZZ
@given(st.binary(max_size=120))
def test_decoders_on_random_bytes(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(PptpkitError):
            decode(data)


@FUZZ
@given(packets)
def test_round_trip(pkt: PapRequest | PapAck | PapNak | ChapChallenge | ChapResponse | EapPacket) -> None:
    raw = pkt.encode()
    decoder = {
        PapRequest: decode_pap,
        PapAck: decode_pap,
        PapNak: decode_pap,
        EapPacket: decode_eap,
    }.get(type(pkt), decode_chap)
    assert decoder(raw) == pkt


@FUZZ
@given(packets, st.integers(0, 200), st.integers(0, 255), st.booleans())
def test_decoders_on_truncated_and_mutated(pkt: PapRequest, cut: int, value: int, truncate: bool) -> None:
    raw = bytearray(pkt.encode())
    if truncate:
        raw = raw[: cut % (len(raw) + 1)]
    elif raw:
        raw[cut % len(raw)] = value
    for decode in DECODERS:
        with contextlib.suppress(PptpkitError):
            decode(bytes(raw))


@FUZZ
@given(
    st.sampled_from(list(AuthMethod)),
    st.sampled_from(list(Role)),
    st.lists(st.one_of(st.binary(max_size=80), packets.map(lambda p: p.encode())), max_size=12),
)
def test_engines_swallow_garbage(method: AuthMethod, role: Role, inputs: list[bytes]) -> None:
    secrets = StaticSecrets({("*", "*"): "pw"})
    config: AuthenticatorConfig | PeerConfig
    if role is Role.AUTHENTICATOR:
        config = AuthenticatorConfig(name="srv", secrets=secrets, random=ScriptedRandom(1), mschap_retries=2)
    else:
        config = PeerConfig(username="u", password="pw", random=ScriptedRandom(2), mschap_retries=2)
    engine = create_engine(method, role, config, 0.0)
    engine.start(0.0)
    now = 0.0
    for raw in inputs:
        engine.receive(raw, now)
        now += 1.5
        engine.handle_timer(now)
        engine.packets_to_send()
        while engine.next_event() is not None:
            pass


def _mutating_filter(plan: list[tuple[int, int, int]]) -> Callable[[str, bytes], bytes | None]:
    steps = iter(plan)

    def apply(direction: str, pkt: bytes) -> bytes | None:
        action, pos, value = next(steps, (0, 0, 0))
        if action == 1:
            return None
        if action == 2 and pkt:
            out = bytearray(pkt)
            out[pos % len(out)] = value
            return bytes(out)
        if action == 3:
            return pkt[: pos % (len(pkt) + 1)]
        return pkt

    return apply


@FUZZ
@given(
    st.sampled_from(list(AuthMethod)),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), st.integers(0, 255)), max_size=20),
)
# Found by this test: the Response lost, then a retransmitted Challenge with its value changed
# while the peer repeats its first Response; the peer answered the changed value too and took
# the Success for it, with other keys than the authenticator's.
@example(AuthMethod.MSCHAP_V1, [(0, 0, 0), (1, 0, 0), (2, 5, 0)])
def test_exchanges_survive_mutation_and_never_fake_success(
    method: AuthMethod, plan: list[tuple[int, int, int]]
) -> None:
    secrets = StaticSecrets({("u", "srv"): "pw"})
    a = create_engine(
        method,
        Role.AUTHENTICATOR,
        AuthenticatorConfig(name="srv", secrets=secrets, random=ScriptedRandom(3)),
        0.0,
    )
    p = create_engine(
        method, Role.PEER, PeerConfig(username="u", password="pw", random=ScriptedRandom(4)), 0.0
    )
    link = Link(a, p)
    link.filter = _mutating_filter(plan)
    link.start()
    link.run_until(400)
    a_ok = [e for e in link.a_events if isinstance(e, AuthSucceeded)]
    p_ok = [e for e in link.p_events if isinstance(e, AuthSucceeded)]
    if method in (AuthMethod.MSCHAP_V2, AuthMethod.EAP) and p_ok and p_ok[0].key_material is not None:
        # mutual authentication: the peer only believes a server that verified it
        assert a_ok
    if a_ok and p_ok:
        assert a_ok[-1].key_material == p_ok[-1].key_material
