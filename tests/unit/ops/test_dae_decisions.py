"""What the built-in server does with an authenticated Disconnect/CoA request (ops/dae.py): which
sessions it names, what it changes, and the ACK/NAK with its Error-Cause, from RFC 5176-style
packets built with our own codec, against a fake session table (no sockets)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.ops.dae import DynamicAuthorization
from pptpkit.radius import crypto
from pptpkit.radius.access import NasInfo
from pptpkit.radius.dae import DaeRequest
from pptpkit.radius.packet import Code, RawAttribute, RawPacket, decode_attributes, encode_attributes
from pptpkit.radius.settings import RadiusSetup
from pptpkit.vpn.notices import TerminateCause

SECRET = b"dae-secret"
AAA = ("192.0.2.10", 40000)
WALL = 1_796_000_000.0
#: Mikrotik-Rate-Limit (vendor 14988, type 8): a rate limit the shaper will handle, not yet.
RATE_LIMIT = RawAttribute(26, (14988).to_bytes(4, "big") + bytes([8, 2 + 7]) + b"10M/10M")


class FakeTable:
    def __init__(self, sessions: Sequence[Any]) -> None:
        self.sessions = list(sessions)
        self.killed: list[tuple[str, str, TerminateCause]] = []
        self.timeouts: list[tuple[str, float | None]] = []
        self.rate_setter: Any = None
        self.rates: list[tuple[str, int, int]] = []

    def all(self) -> list[Any]:
        return list(self.sessions)

    def kill(self, session: Any, reason: str, cause: TerminateCause) -> None:
        self.killed.append((session.id, reason, cause))

    def set_session_timeout(self, session: Any, seconds: float | None) -> None:
        self.timeouts.append((session.id, seconds))


def fake_session(n: int, user: str, finished: bool = False) -> Any:
    idle: list[float] = []
    link = SimpleNamespace(finished=finished, idle=idle, set_idle_timeout=idle.append)
    return SimpleNamespace(id=f"5F00000000000{n:03X}", user=user, link=link,
                           address=ipaddress.IPv4Address(f"198.51.100.{n}"))


#: Fresh for every test (the CoA tests change them); the ids are the same each time.
ALICE, BOB, ALICE2 = (fake_session(n, u).id for n, u in ((1, "alice"), (2, "bob"), (3, "alice")))


def packet(code: Code, attrs: Sequence[tuple[str, object]], extra: Sequence[RawAttribute] = (),
           ident: int = 9) -> bytes:
    """A request as a RADIUS server signs it (RFC 5176 2.3, Message-Authenticator first)."""
    raw = encode_attributes(attrs, secret=SECRET, authenticator=b"\0" * 16,  # type: ignore[arg-type]
                            salt=lambda: b"\x80\x01")
    ma = RawAttribute(crypto.MESSAGE_AUTHENTICATOR_TYPE, b"\0" * 16)
    draft = RawPacket(code=code, identifier=ident, authenticator=b"\0" * 16,
                      attributes=(ma, *raw, *extra)).encode()
    draft = draft[:22] + crypto.message_authenticator(draft, SECRET, b"\0" * 16) + draft[38:]
    return draft[:4] + crypto.accounting_request_authenticator(draft, SECRET) + draft[20:]


def dae() -> tuple[DynamicAuthorization, FakeTable]:
    setup = RadiusSetup(nas=NasInfo(nas_identifier="gw1", nas_ip_address=ipaddress.IPv4Address("192.0.2.2")),
                        dae_listen=("192.0.2.2", 3799), dae_clients=(AAA[0],), dae_secret=SECRET)
    d = DynamicAuthorization(setup)
    table = FakeTable([fake_session(1, "alice"), fake_session(2, "bob"), fake_session(3, "alice"),
                       fake_session(4, "carol", finished=True)])
    d._sessions = table  # type: ignore[assignment]
    return d, table


def ask(d: DynamicAuthorization, data: bytes) -> tuple[int, dict[str, list[Any]]]:
    """The answer's code and attributes, after checking it is signed for this request."""
    request = d.engine.receive(data, AAA, wall=WALL)
    assert isinstance(request, DaeRequest)
    answer = d.handle(request)
    assert crypto.verify_response_authenticator(answer, request.authenticator, SECRET)
    assert crypto.verify_message_authenticator(answer, SECRET, request.authenticator)
    decoded = RawPacket.decode(answer)
    out: dict[str, list[Any]] = {}
    for a in decode_attributes(decoded.attributes, secret=SECRET,
                               request_authenticator=request.authenticator):
        out.setdefault(a.name, []).append(a.value)
    return decoded.code, out


def test_disconnect_by_session_id_ends_it_admin_reset_and_echoes_proxy_state() -> None:
    d, table = dae()
    asked = [("Acct-Session-Id", ALICE), ("NAS-Identifier", "gw1"), ("Proxy-State", b"hop1")]
    code, attrs = ask(d, packet(Code.DISCONNECT_REQUEST, asked))
    assert code == Code.DISCONNECT_ACK and attrs.get("Proxy-State") == [b"hop1"]
    assert "Error-Cause" not in attrs
    assert [(sid, cause) for sid, _, cause in table.killed] == [(ALICE, TerminateCause.ADMIN_RESET)]


def test_every_identifier_given_must_match() -> None:
    d, table = dae()
    code, attrs = ask(d, packet(Code.DISCONNECT_REQUEST, [("Acct-Session-Id", ALICE), ("User-Name", "bob")]))
    assert code == Code.DISCONNECT_NAK and attrs["Error-Cause"] == [503] and table.killed == []
    code, _ = ask(d, packet(Code.DISCONNECT_REQUEST, [("User-Name", "alice")], ident=10))
    assert code == Code.DISCONNECT_ACK and [k[0] for k in table.killed] == [ALICE, ALICE2]
    code, _ = ask(d, packet(Code.DISCONNECT_REQUEST, [("Framed-IP-Address", "198.51.100.2")], ident=11))
    assert code == Code.DISCONNECT_ACK and table.killed[-1][0] == BOB
    # A session that already ended is not there any more.
    code, attrs = ask(d, packet(Code.DISCONNECT_REQUEST, [("User-Name", "carol")], ident=12))
    assert code == Code.DISCONNECT_NAK and attrs["Error-Cause"] == [503]


def test_another_nas_is_403_and_nothing_happens() -> None:
    d, table = dae()
    code, attrs = ask(d, packet(Code.DISCONNECT_REQUEST, [("User-Name", "alice"), ("NAS-Identifier", "gw2")]))
    assert (code, attrs["Error-Cause"]) == (Code.DISCONNECT_NAK, [403])
    code, attrs = ask(d, packet(Code.COA_REQUEST, [("User-Name", "alice"), ("NAS-IP-Address", "192.0.2.3"),
                                                  ("Session-Timeout", 30)], ident=10))
    assert (code, attrs["Error-Cause"]) == (Code.COA_NAK, [403])
    assert table.killed == [] and table.timeouts == []


def test_no_identifier_is_402() -> None:
    d, table = dae()
    code, attrs = ask(d, packet(Code.DISCONNECT_REQUEST, [("NAS-Identifier", "gw1")]))
    assert (code, attrs["Error-Cause"]) == (Code.DISCONNECT_NAK, [402]) and table.killed == []


def test_coa_sets_the_timeouts() -> None:
    d, table = dae()
    code, _ = ask(d, packet(Code.COA_REQUEST, [("Acct-Session-Id", BOB), ("Session-Timeout", 30),
                                              ("Idle-Timeout", 120)]))
    assert code == Code.COA_ACK and table.timeouts == [(BOB, 30.0)] and table.sessions[1].link.idle == [120.0]
    code, _ = ask(d, packet(Code.COA_REQUEST, [("Acct-Session-Id", BOB), ("Session-Timeout", 0)], ident=10))
    assert code == Code.COA_ACK and table.timeouts[-1] == (BOB, None)  # 0: no limit any more
    assert table.killed == []


def test_a_rate_limit_in_a_coa_is_refused_whole_with_401_without_shaping() -> None:
    """No shaper running (rate_setter None): the CoA must not half-apply (RFC 5176 3.4)."""
    d, table = dae()
    code, attrs = ask(d, packet(Code.COA_REQUEST, [("User-Name", "bob"), ("Session-Timeout", 30)],
                                [RATE_LIMIT]))
    assert (code, attrs["Error-Cause"]) == (Code.COA_NAK, [401])
    code, attrs = ask(d, packet(Code.COA_REQUEST, [("User-Name", "bob"), ("Filter-Id", "fast")], ident=10))
    assert (code, attrs["Error-Cause"]) == (Code.COA_NAK, [401])
    assert table.timeouts == [] and table.sessions[1].link.idle == []


def test_a_disconnect_that_also_asks_for_a_change_is_401() -> None:
    d, table = dae()
    code, attrs = ask(d, packet(Code.DISCONNECT_REQUEST, [("User-Name", "bob"), ("Session-Timeout", 30)]))
    assert (code, attrs["Error-Cause"]) == (Code.DISCONNECT_NAK, [401]) and table.killed == []


def test_a_retransmission_gets_the_same_answer_and_is_acted_on_once() -> None:
    d, table = dae()
    data = packet(Code.DISCONNECT_REQUEST, [("User-Name", "bob")])
    first = d.engine.receive(data, AAA, wall=WALL)
    assert isinstance(first, DaeRequest)
    answer = d.handle(first)
    assert d.engine.receive(data, AAA, wall=WALL) == answer
    assert len(table.killed) == 1 and d.engine.stats.duplicates == 1
    # The same Identifier with a new request is a new request.
    other = d.engine.receive(packet(Code.DISCONNECT_REQUEST, [("User-Name", "alice")]), AAA, wall=WALL)
    assert isinstance(other, DaeRequest)


def signed(code: int, body: bytes, ident: int = 1) -> bytes:
    """Any attribute bytes, correctly signed: the fuzz gets past the authenticator check."""
    head = bytes([code, ident]) + (20 + len(body)).to_bytes(2, "big")
    draft = head + b"\0" * 16 + body
    return head + crypto.accounting_request_authenticator(draft, SECRET) + body


_TLV = st.tuples(st.sampled_from([1, 4, 8, 11, 26, 27, 28, 32, 33, 44, 55, 80, 101, 200]),
                 st.binary(max_size=24))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([Code.DISCONNECT_REQUEST, Code.COA_REQUEST]), st.lists(_TLV, max_size=8),
       st.binary(max_size=8))
def test_fuzzed_signed_requests_get_a_signed_answer_or_are_dropped(code: Code, tlvs: list[tuple[int, bytes]],
                                                                   tail: bytes) -> None:
    """Whatever an authenticated server sends - bad lengths, values of the wrong size, unknown
    VSAs, a Message-Authenticator that does not verify - nothing raises: it is dropped and
    counted, or answered with a signed ACK/NAK."""
    d, _ = dae()
    body = b"".join(bytes([t, min(len(v) + 2, 255)]) + v for t, v in tlvs) + tail
    got = d.engine.receive(signed(code, body), AAA, wall=WALL)
    if isinstance(got, DaeRequest):
        answer = d.handle(got)
        assert RawPacket.decode(answer).code in (code + 1, code + 2)
        assert crypto.verify_response_authenticator(answer, got.authenticator, SECRET)
    else:
        assert got is None


def test_a_coa_rate_goes_to_the_shaper() -> None:
    import asyncio

    async def run() -> tuple[Any, Any, Any]:
        d, table = dae()

        async def setter(session: Any, down: int, up: int) -> bool:
            table.rates.append((session.id, down, up))
            return True

        table.rate_setter = setter
        answer = ask(d, packet(Code.COA_REQUEST, [("User-Name", "bob"), ("Filter-Id", "2M/512k")]))
        await asyncio.sleep(0)
        refused = ask(d, packet(Code.COA_REQUEST, [("User-Name", "bob"), ("Filter-Id", "gold")], ident=11))
        return answer, refused, table

    (code, _), (refused_code, refused), table = asyncio.run(run())
    assert code == Code.COA_ACK and [r[1:] for r in table.rates] == [(2000, 512)]
    assert (refused_code, refused["Error-Cause"]) == (Code.COA_NAK, [401])
