"""pptpkit's RADIUS client (engine + asyncio adapter) against the real FreeRADIUS in a namespace.

The MS-CHAP cases are the real proof: the NT-Response is computed by pptpkit.crypto.mschap,
FreeRADIUS checks it against the password it stores, and what it returns - the MS-CHAP2-Success
authenticator response and the MPPE keys, decrypted with our RFC 2548 code - must equal what our
own crypto derives from the password.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_binary, require_root
from freeradius import FreeRadius, User
from netns import NetnsLab, inside
from pptpkit.crypto import mppe, mschap
from pptpkit.io.radius import RadiusUdpClient
from pptpkit.radius.access import (
    CallInfo,
    FramedAddress,
    NasInfo,
    chap_request,
    mschapv1_request,
    mschapv2_request,
    pap_request,
    parse_access_answer,
)
from pptpkit.radius.client import (
    AccessAccepted,
    AccessRejected,
    AccountingResponded,
    RadiusClientConfig,
    RadiusServer,
    RequestTimedOut,
    ServerDown,
    StatusServerAnswered,
)

pytestmark = [pytest.mark.root]

RADIUS, RADIUS2, DEAD, NAS = "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.2"
SECRET = "radius-secret-7"
USERS = [
    User("alice", "wonderland", reply=[
        ("Framed-IP-Address", "198.51.100.20"), ("Session-Timeout", "3600"),
        ("Idle-Timeout", "600"), ("Acct-Interim-Interval", "60"), ("Class", '"pptpkit-class"'),
        ("Reply-Message", '"hello alice"'), ("Filter-Id", '"rate-1M"'), ("Framed-MTU", "1400"),
    ]),
    User("pooluser", "pool-pw", reply=[("Framed-IP-Address", "255.255.255.254"),
                                       ("Framed-Pool", '"main"')]),
    User("bob", "builder", nt_only=True),
    User("carol", "c@rol-Pässword"),
]
NASINFO = NasInfo(nas_identifier="pptpkit-test", nas_ip_address=ipaddress.IPv4Address(NAS))
CALL = CallInfo(nas_port=7, client_address="203.0.113.9", server_address=NAS)


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    require_binary("freeradius")
    with NetnsLab("pkr") as lab:
        srv, cli = lab.add_two_hosts(RADIUS, NAS)
        lab.ip(srv, "addr", "add", f"{RADIUS2}/24", "dev", "srv0")
        lab.ip(srv, "addr", "add", f"{DEAD}/24", "dev", "srv0")
        yield lab, srv, cli


@pytest.fixture
def radius(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> Iterator[FreeRadius]:
    with FreeRadius(lab[0], lab[1], RADIUS, tmp_path / "r1", SECRET, USERS,
                    coa_target=(NAS, 3799)) as server:
        yield server


def server(address: str = RADIUS, port: int = 1812, secret: str = SECRET) -> RadiusServer:
    return RadiusServer(address=address, port=port, secret=secret.encode())


def run_client(ns: str, config: RadiusClientConfig,
               body: Callable[[RadiusUdpClient], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        client = await RadiusUdpClient.open(config)
        try:
            return await body(client)
        finally:
            client.close()

    with inside(ns):
        return asyncio.run(asyncio.wait_for(main(), 120))


def auth(ns: str, attrs: Any, servers: tuple[RadiusServer, ...] = (server(),), **kw: Any) -> Any:
    config = RadiusClientConfig(servers=servers, timeout=kw.pop("timeout", 1.0), **kw)

    async def body(client: RadiusUdpClient) -> Any:
        return await client.access_request(attrs), client.engine.stats

    return run_client(ns, config, body)


def test_pap_accept_with_reply_attributes_and_reject(lab: Any, radius: FreeRadius) -> None:
    _, _, cli = lab
    answer, stats = auth(cli, pap_request(NASINFO, CALL, "alice", b"wonderland"))
    assert isinstance(answer, AccessAccepted), radius.log_text()[-3000:]
    result = parse_access_answer(True, answer.attributes)
    assert result.framed_ip == ipaddress.IPv4Address("198.51.100.20")
    assert (result.session_timeout, result.idle_timeout, result.acct_interim_interval) == (3600, 600, 60)
    assert result.classes == (b"pptpkit-class",) and result.reply_messages == ("hello alice",)
    assert result.filter_ids == ("rate-1M",)
    assert result.unused == ("Framed-MTU",)  # named for the once-per-session log
    assert stats.dropped == 0
    # What FreeRADIUS saw: our request attributes, by its own dictionary.
    log = radius.log_text()
    for line in ('NAS-Port-Type = Virtual', 'Service-Type = Framed-User', 'Framed-Protocol = PPP',
                 'Tunnel-Type:0 = PPTP', 'Tunnel-Medium-Type:0 = IPv4',
                 'Tunnel-Client-Endpoint:0 = "203.0.113.9"', 'Calling-Station-Id = "203.0.113.9"',
                 'NAS-Identifier = "pptpkit-test"', 'NAS-Port = 7'):
        assert line in log, line

    answer, _ = auth(cli, pap_request(NASINFO, CALL, "alice", b"wrong"))
    assert isinstance(answer, AccessRejected)
    assert not parse_access_answer(False, answer.attributes).accepted

    answer, _ = auth(cli, pap_request(NASINFO, CALL, "carol", "c@rol-Pässword".encode()))
    assert isinstance(answer, AccessAccepted)

    answer, _ = auth(cli, pap_request(NASINFO, CALL, "pooluser", b"pool-pw"))
    result = parse_access_answer(True, answer.attributes)
    assert result.framed_ip is FramedAddress.POOL and result.framed_pool == "main"


def test_chap_md5(lab: Any, radius: FreeRadius) -> None:
    import hashlib

    _, _, cli = lab
    challenge = os.urandom(16)
    for password, expected in (("wonderland", AccessAccepted), ("nope", AccessRejected)):
        response = hashlib.md5(bytes([42]) + password.encode() + challenge).digest()
        answer, _ = auth(cli, chap_request(NASINFO, CALL, "alice", ident=42, challenge=challenge,
                                           response=response))
        assert isinstance(answer, expected)


@pytest.mark.parametrize("user,password", [("alice", "wonderland"), ("bob", "builder")])
def test_mschapv1_keys_match_our_crypto(lab: Any, radius: FreeRadius, user: str, password: str) -> None:
    _, _, cli = lab
    challenge = os.urandom(8)
    nt = mschap.nt_challenge_response(challenge, password)
    answer, _ = auth(cli, mschapv1_request(NASINFO, CALL, user, ident=3, challenge=challenge,
                                           lm_response=bytes(24), nt_response=nt))
    assert isinstance(answer, AccessAccepted), radius.log_text()[-3000:]
    result = parse_access_answer(True, answer.attributes)
    # RFC 2548 2.4.1 / RFC 3079 2: the NT key is the hash of the NT password hash.
    assert result.mschapv1_nt_key == mschap.hash_nt_password_hash(mschap.nt_password_hash(password))
    assert result.encryption_policy == 2 and result.encryption_types == 4  # required, 128-bit

    wrong = mschap.nt_challenge_response(challenge, password + "x")
    answer, _ = auth(cli, mschapv1_request(NASINFO, CALL, user, ident=4, challenge=challenge,
                                           lm_response=bytes(24), nt_response=wrong))
    assert isinstance(answer, AccessRejected)
    assert "E=691" in (parse_access_answer(False, answer.attributes).chap_error or "")


@pytest.mark.parametrize("user,password", [("alice", "wonderland"), ("bob", "builder")])
def test_mschapv2_success_and_mppe_keys_match_our_crypto(lab: Any, radius: FreeRadius,
                                                         user: str, password: str) -> None:
    _, _, cli = lab
    auth_challenge, peer_challenge = os.urandom(16), os.urandom(16)
    nt = mschap.generate_nt_response(auth_challenge, peer_challenge, user, password)
    answer, stats = auth(cli, mschapv2_request(NASINFO, CALL, user, ident=9,
                                               authenticator_challenge=auth_challenge,
                                               peer_challenge=peer_challenge, nt_response=nt))
    assert isinstance(answer, AccessAccepted), radius.log_text()[-3000:]
    result = parse_access_answer(True, answer.attributes)
    expected = mschap.generate_authenticator_response(mschap.nt_password_hash(password), nt,
                                                      peer_challenge, auth_challenge, user)
    assert result.chap2_success_ident == 9
    assert result.chap2_success == expected.encode()
    # The keys FreeRADIUS sent, decrypted with our salt code, are the server-side MPPE keys that
    # RFC 3079 derives from the password: MS-MPPE-Send-Key is what the NAS sends with.
    hash_hash = mschap.hash_nt_password_hash(mschap.nt_password_hash(password))
    send, recv = mppe.mschapv2_start_keys(hash_hash, nt, is_server=True, key_bits=128)
    assert result.mppe_keys is not None
    assert result.mppe_keys.send[:16] == send and result.mppe_keys.recv[:16] == recv
    assert result.encryption_policy == 2 and result.encryption_types == 4
    assert stats.dropped == 0

    bad = mschap.generate_nt_response(auth_challenge, peer_challenge, user, "not-" + password)
    answer, _ = auth(cli, mschapv2_request(NASINFO, CALL, user, ident=10,
                                           authenticator_challenge=auth_challenge,
                                           peer_challenge=peer_challenge, nt_response=bad))
    assert isinstance(answer, AccessRejected)
    rejected = parse_access_answer(False, answer.attributes)
    assert rejected.chap_error_ident == 10 and "E=691" in (rejected.chap_error or "")
    assert rejected.mppe_keys is None


def test_accounting_start_and_stop_land_in_the_detail_file(lab: Any, radius: FreeRadius) -> None:
    _, _, cli = lab
    config = RadiusClientConfig(servers=(server(port=1813),), timeout=1.0)
    common = [("User-Name", "alice"), ("Acct-Session-Id", "pk-0001"), ("NAS-Identifier", "pptpkit-test"),
              ("NAS-Port", 7), ("Framed-IP-Address", "198.51.100.20"), ("Class", b"pptpkit-class")]

    async def body(client: RadiusUdpClient) -> list[Any]:
        start = await client.accounting_request([("Acct-Status-Type", "Start"), *common])
        stop = await client.accounting_request([
            ("Acct-Status-Type", "Stop"), *common, ("Acct-Session-Time", 42),
            ("Acct-Input-Octets", 1234), ("Acct-Output-Octets", 5678), ("Acct-Input-Gigawords", 1),
            ("Acct-Input-Packets", 10), ("Acct-Output-Packets", 20),
            ("Acct-Terminate-Cause", "User-Request")])
        return [start, stop]

    answers = run_client(cli, config, body)
    assert all(isinstance(a, AccountingResponded) for a in answers)
    records = radius.wait_for_records(2)
    assert [r["Acct-Status-Type"] for r in records] == ["Start", "Stop"]
    stop = records[1]
    assert stop["Acct-Session-Id"] == "pk-0001" and stop["Acct-Session-Time"] == "42"
    assert stop["Acct-Input-Octets"] == "1234" and stop["Acct-Output-Octets"] == "5678"
    assert stop["Acct-Input-Gigawords"] == "1" and stop["Acct-Terminate-Cause"] == "User-Request"
    assert stop["Framed-IP-Address"] == "198.51.100.20" and stop["Class"] == "0x" + b"pptpkit-class".hex()


def test_wrong_secret_is_a_verification_failure_not_an_answer(lab: Any, radius: FreeRadius) -> None:
    _, _, cli = lab
    # FreeRADIUS drops a request whose Message-Authenticator is wrong, so to get an answer signed
    # with a secret we do not expect, listen with the right one for a wrong-secret server entry:
    # the request is signed with the right secret but the answer is verified with the wrong one.
    answer, stats = auth(cli, pap_request(NASINFO, CALL, "alice", b"wonderland"),
                         servers=(server(secret="not-the-secret"),), timeout=0.5, retries=1)
    assert isinstance(answer, RequestTimedOut)
    assert "invalid Message-Authenticator" in radius.log_text()
    assert stats.responses == 0


def test_an_answer_under_another_secret_is_counted_and_ignored(lab: Any, radius: FreeRadius) -> None:
    _, _, cli = lab
    config = RadiusClientConfig(servers=(server(),), timeout=0.5, retries=1)

    async def body(client: RadiusUdpClient) -> Any:
        # Sign with the real secret, then verify the answer against a wrong one: swap the
        # engine's server secret after encoding (what a misconfigured secret on our side does
        # to the answer's authenticators).
        engine = client.engine
        state = engine._servers[0]
        rid = engine.send_access_request(pap_request(NASINFO, CALL, "alice", b"wonderland"),
                                         asyncio.get_running_loop().time())
        state.server = RadiusServer(address=RADIUS, port=1812, secret=b"wrong")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        client._waiters[rid] = fut
        client._pump()
        return await fut, engine.stats

    answer, stats = run_client(cli, config, body)
    assert isinstance(answer, RequestTimedOut)
    assert stats.dropped_bad_authenticator >= 1 and stats.responses == 0


def test_missing_message_authenticator_is_refused(lab: Any, tmp_path: Path) -> None:
    lab_, srv, cli = lab
    with FreeRadius(lab_, srv, RADIUS, tmp_path / "noma", SECRET, USERS,
                    reply_message_authenticator=False):
        answer, stats = auth(cli, pap_request(NASINFO, CALL, "alice", b"wonderland"),
                             timeout=0.5, retries=1)
    assert isinstance(answer, RequestTimedOut)  # Blast-RADIUS: an unsigned Accept is no Accept
    assert stats.dropped_missing_message_authenticator == 2 and stats.responses == 0


def test_server_down_times_out_after_retries(lab: Any) -> None:
    _, _, cli = lab
    events: list[Any] = []
    config = RadiusClientConfig(servers=(server(DEAD),), timeout=0.2, retries=2, backoff=2.0)

    async def body(client: RadiusUdpClient) -> Any:
        client._on_server_event = events.append
        t0 = asyncio.get_running_loop().time()
        answer = await client.access_request(pap_request(NASINFO, CALL, "alice", b"wonderland"))
        return answer, asyncio.get_running_loop().time() - t0, client.engine.stats

    answer, elapsed, stats = run_client(cli, config, body)
    assert isinstance(answer, RequestTimedOut) and answer.servers == (f"{DEAD}:1812",)
    assert stats.transmissions == 3 and 1.3 <= elapsed < 3.0  # 0.2 + 0.4 + 0.8
    assert [type(e) for e in events] == [ServerDown]


def test_failover_to_the_second_server_and_back(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    lab_, srv, cli = lab
    events: list[Any] = []
    with FreeRadius(lab_, srv, RADIUS2, tmp_path / "r2", "second-secret", USERS):
        config = RadiusClientConfig(servers=(server(DEAD), server(RADIUS2, secret="second-secret")),
                                    timeout=0.2, retries=1, dead_time=60)

        async def body(client: RadiusUdpClient) -> Any:
            client._on_server_event = events.append
            first = await client.access_request(pap_request(NASINFO, CALL, "alice", b"wonderland"))
            t0 = asyncio.get_running_loop().time()
            second = await client.access_request(pap_request(NASINFO, CALL, "alice", b"wonderland"))
            quick = asyncio.get_running_loop().time() - t0
            status = await client.status_server(1)
            return first, second, quick, status, client.engine.stats

        first, second, quick, status, stats = run_client(cli, config, body)
    assert isinstance(first, AccessAccepted) and first.server == f"{RADIUS2}:1812"
    # The dead server is skipped by the next request for dead_time: no waiting again.
    assert isinstance(second, AccessAccepted) and quick < 0.2
    assert stats.failovers == 1 and [type(e) for e in events] == [ServerDown]
    assert isinstance(status, StatusServerAnswered)
