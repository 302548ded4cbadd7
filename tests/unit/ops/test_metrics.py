"""The metrics extension: notices and counters in, the exposition text out (parsed back with
prometheus_client's own parser); real in-memory sessions; the HTTP responder on loopback; the
``--metrics`` flag.  No root needed."""

from __future__ import annotations

import argparse
import asyncio
import struct
from collections.abc import Callable
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.cli.argtypes import metrics_address
from pptpkit.cli.main import build_parser
from pptpkit.cli.server import extensions, program_config, server_settings
from pptpkit.errors import ConfigError
from pptpkit.gre.call import GreStats
from pptpkit.io.gresock import SocketStats
from pptpkit.io.link import LinkStats
from pptpkit.ops.metrics import MAX_REQUEST_HEAD, Metrics, http_response
from pptpkit.ppp.session_config import MppePolicy
from pptpkit.vpn.guard import AuthGuard, GuardConfig, GuardedSecrets
from pptpkit.vpn.notices import (
    SessionAuthFailed,
    SessionDown,
    SessionStarted,
    SessionUp,
    TerminateCause,
)
from pptpkit.vpn.pool import AddressPool
from pptpkit.vpn.server import BuiltinConfig, BuiltinSessions
from sessionlab import MemoryPlane, dial, run, until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(text: str) -> Samples:
    """Every sample of an exposition text, keyed by name and sorted labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def render(metrics: Metrics) -> Samples:
    return scrape(metrics.render().decode())


# -- notices fed by hand into fakes of the table and the PAC -----------------------------------------


class FakeTable:
    """What the metrics read of BuiltinSessions: find, counters, observers, the secrets."""

    def __init__(self, guard: AuthGuard | None = None) -> None:
        self.live: dict[str, Any] = {}
        self.observers: list[Callable[[Any], None]] = []
        self.admission: list[Callable[[Any], str | None]] = []
        self.preauth = 0
        self.refused_max_sessions = self.refused_per_source = self.refused_preauth = 0
        self.refused_by_admission = self.auth_timeouts = 0
        secrets = StaticSecrets({})
        self.config = SimpleNamespace(secrets=secrets if guard is None else GuardedSecrets(secrets, guard))

    def find(self, session_id: str) -> Any:
        return self.live.get(session_id)

    def notify(self, notice: Any) -> None:
        for observer in self.observers:
            observer(notice)


class FakeServer:
    def __init__(self) -> None:
        self.connections = 0
        self.refused_max_connections = self.refused_per_source = 0
        self.gre_socket = SimpleNamespace(stats=SocketStats())


def fake_session(sid: str) -> Any:
    return SimpleNamespace(id=sid, up=None, link=SimpleNamespace(stats=LinkStats()),
                           call=SimpleNamespace(stats=GreStats()))


def down(session: Any, cause: TerminateCause) -> SessionDown:
    st = session.link.stats
    return SessionDown(session, cause, "test", 1.0, st.octets_in, st.octets_out, st.packets_in,
                       st.packets_out)


def test_traffic_counters_stay_monotonic_across_a_session_end() -> None:
    now = [100.0]
    guard = AuthGuard(GuardConfig(limit=2, window=60, lockout=30), lambda: now[0])
    table, server = FakeTable(guard), FakeServer()
    metrics = Metrics(None, clock=lambda: now[0])
    metrics.attach(table, server)  # type: ignore[arg-type]
    a, b = fake_session("A"), fake_session("B")
    for s in (a, b):
        table.live[s.id] = s
        table.notify(SessionStarted(s))
    now[0] += 0.3
    a.up = SimpleNamespace(peer_address=IPv4Address("198.51.100.10"))  # only its presence counts
    table.notify(SessionUp(a, a.up))
    a.link.stats.octets_in, a.link.stats.packets_in, a.link.stats.octets_out = 1000, 10, 500
    a.call.stats.lost, a.call.stats.reordered, a.call.stats.duplicates = 2, 3, 1
    table.preauth, server.connections = 1, 2
    first = render(metrics)
    assert value(first, "pptpkit_sessions_up") == 1
    assert value(first, "pptpkit_sessions_authenticating") == 1
    assert value(first, "pptpkit_control_connections") == 2
    assert value(first, "pptpkit_session_setups_total") == 2
    assert value(first, "pptpkit_session_bytes_total", direction="in") == 1000
    assert value(first, "pptpkit_session_bytes_total", direction="out") == 500
    assert value(first, "pptpkit_session_packets_total", direction="in") == 10
    assert value(first, "pptpkit_gre_lost_packets_total") == 2
    assert value(first, "pptpkit_gre_reordered_packets_total") == 3
    assert value(first, "pptpkit_gre_duplicate_packets_total") == 1
    assert value(first, "pptpkit_session_setup_seconds_count") == 1
    assert value(first, "pptpkit_session_setup_seconds_sum") == pytest.approx(0.3)
    assert value(first, "pptpkit_session_setup_seconds_bucket", le="0.25") == 0
    assert value(first, "pptpkit_session_setup_seconds_bucket", le="0.5") == 1
    # A ends but the table still holds it for a moment (as BuiltinSessions does): counted once.
    a.link.stats.octets_in = 1200
    table.notify(down(a, TerminateCause.USER_REQUEST))
    b.link.stats.octets_in = 40
    second = render(metrics)
    assert value(second, "pptpkit_session_bytes_total", direction="in") == 1240
    assert value(second, "pptpkit_sessions_up") == 0
    assert value(second, "pptpkit_sessions_ended_total", cause="User-Request") == 1
    # Later counting on A's objects is not seen; B leaves the table without a SessionDown and
    # is folded in once, not lost and not counted twice.
    a.link.stats.octets_in = 99999
    del table.live["A"], table.live["B"]
    third = render(metrics)
    fourth = render(metrics)
    assert value(third, "pptpkit_session_bytes_total", direction="in") == 1240
    assert value(fourth, "pptpkit_session_bytes_total", direction="in") == 1240
    assert value(fourth, "pptpkit_gre_lost_packets_total") == 2


def test_failures_refusals_lockouts_and_the_gre_socket() -> None:
    now = [0.0]
    guard = AuthGuard(GuardConfig(limit=2, window=60, lockout=30), lambda: now[0])
    table, server = FakeTable(guard), FakeServer()
    guard.attach(table)  # type: ignore[arg-type]
    metrics = Metrics(None, clock=lambda: now[0])
    metrics.attach(table, server)  # type: ignore[arg-type]
    for sid in ("F1", "F2"):
        s = fake_session(sid)
        s.source = "192.0.2.9"
        table.live[sid] = s
        table.notify(SessionStarted(s))
        table.notify(SessionAuthFailed(s, "mallory", AuthMethod.MSCHAP_V2, "wrong password"))
        table.notify(down(s, TerminateCause.USER_ERROR))
    assert guard.admit(SimpleNamespace(peer_address="192.0.2.9")) is not None  # type: ignore[arg-type]
    table.refused_by_admission, table.refused_max_sessions, table.auth_timeouts = 1, 4, 3
    server.refused_max_connections, server.refused_per_source = 5, 6
    server.gre_socket.stats.received, server.gre_socket.stats.unknown_call = 70, 7
    got = render(metrics)
    assert value(got, "pptpkit_auth_failures_total", method="mschap-v2") == 2
    assert value(got, "pptpkit_session_setup_failures_total", reason="User-Error") == 2
    assert value(got, "pptpkit_session_setup_seconds_count") == 0
    assert value(got, "pptpkit_auth_lockouts_total", scope="address") == 1
    assert value(got, "pptpkit_auth_lockout_refusals_total", scope="address") == 1
    # Without lock_users no user is ever locked: no series claims otherwise.
    assert ("pptpkit_auth_lockouts_total", (("scope", "user"),)) not in got
    assert value(got, "pptpkit_auth_timeouts_total") == 3
    for reason, n in (("admission", 1), ("max_sessions", 4), ("max_connections", 5),
                      ("connections_per_source", 6), ("preauth", 0), ("per_source", 0)):
        assert got[("pptpkit_refusals_total", (("reason", reason),))] == n, reason
    assert value(got, "pptpkit_gre_socket_received_packets_total") == 70
    assert value(got, "pptpkit_gre_socket_dropped_packets_total", reason="unknown_call") == 7
    # Nothing RADIUS without RADIUS, and no label names a user or an address.
    assert not any(name.startswith("pptpkit_radius") for name, _ in got)
    labels = {k for _, pairs in got for k, _ in pairs}
    assert labels <= {"direction", "reason", "cause", "method", "scope", "le"}, labels


def test_radius_outcomes_are_exported_only_with_radius() -> None:
    import collections

    radius = SimpleNamespace(outcomes=collections.Counter({"accept": 3, "timeout": 1}))
    metrics = Metrics(None, radius=radius, clock=lambda: 0.0)  # type: ignore[arg-type]
    metrics.attach(FakeTable(), FakeServer())  # type: ignore[arg-type]
    got = render(metrics)
    assert value(got, "pptpkit_radius_access_requests_total", outcome="accept") == 3
    assert value(got, "pptpkit_radius_access_requests_total", outcome="timeout") == 1


def test_two_servers_in_one_process_have_registries_of_their_own() -> None:
    one, two = Metrics(None, clock=lambda: 0.0), Metrics(None, clock=lambda: 0.0)
    one.setups.inc()
    assert value(render(one), "pptpkit_session_setups_total") == 1
    assert value(render(two), "pptpkit_session_setups_total") == 0


# -- real sessions in memory ----------------------------------------------------------------------


def ipv4(src: str, dst: str, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
                         IPv4Address(src).packed, IPv4Address(dst).packed)
    return header + payload


def test_real_sessions_up_traffic_down_and_a_wrong_password() -> None:
    async def main() -> None:
        cfg = BuiltinConfig(pool=AddressPool(["198.51.100.1"], ["198.51.100.10", "198.51.100.11"]),
                            secrets=StaticSecrets({("alice", "pptpd"): "pw"}), mppe=MppePolicy.nomppe())
        table = BuiltinSessions(cfg, MemoryPlane())
        metrics = Metrics(None)
        await metrics.start(table, FakeServer())  # type: ignore[arg-type]
        _, client = await dial(table, 1, "pw")
        await client.wait_up()
        await until(lambda: value(render(metrics), "pptpkit_sessions_up") == 1)
        for _ in range(3):
            assert client.send_ip(ipv4("198.51.100.10", "198.51.100.1", b"x" * 72))
        await until(lambda: value(render(metrics), "pptpkit_session_packets_total", direction="in") == 3)
        got = render(metrics)
        assert value(got, "pptpkit_session_bytes_total", direction="in") == 3 * 92
        assert value(got, "pptpkit_session_setup_seconds_count") == 1
        [session] = table.all()
        table.kill(session)
        await until(lambda: table.sessions == 0)
        got = render(metrics)
        assert value(got, "pptpkit_sessions_up") == 0
        assert value(got, "pptpkit_sessions_ended_total", cause="Admin-Reset") == 1
        assert value(got, "pptpkit_session_bytes_total", direction="in") == 3 * 92
        _, bad = await dial(table, 2, "wrong")
        await asyncio.wait_for(asyncio.shield(bad.closed), 10)
        await until(lambda: table.sessions == 0)
        got = render(metrics)
        assert value(got, "pptpkit_auth_failures_total", method="mschap-v2") == 1
        assert value(got, "pptpkit_session_setup_failures_total", reason="User-Error") == 1
        assert value(got, "pptpkit_session_setups_total") == 2
        assert value(got, "pptpkit_session_setup_seconds_count") == 1
        await metrics.stop()
        assert metrics.observe not in table.observers

    run(main())


# -- HTTP -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
    (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", b"200"),
    (b"GET / HTTP/1.1\r\n\r\n", b"404"),
    (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
    (b"hello\r\n\r\n", b"400"),
])
def test_http_answers(head: bytes, status: bytes) -> None:
    calls: list[int] = []

    def body() -> bytes:
        calls.append(1)
        return b"pptpkit_x 1\n"

    out = http_response(head, body)
    assert out.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"Connection: close\r\n" in out
    assert bool(calls) == (status == b"200")
    if status == b"200":
        assert out.endswith(b"\r\n\r\npptpkit_x 1\n") and b"version=0.0.4" in out
    head_only = http_response(b"HEAD /metrics HTTP/1.1\r\n\r\n", body)
    assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: 12\r\n" in head_only


async def fetch(address: tuple[str, int], request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_served_on_loopback_and_stopped_with_a_client_still_connected() -> None:
    async def main() -> None:
        metrics = Metrics(("127.0.0.1", 0))
        await metrics.start(FakeTable(), FakeServer())  # type: ignore[arg-type]
        address = metrics.address
        assert address is not None and address[0] == "127.0.0.1"
        answer = await fetch(address, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert value(scrape(body.decode()), "pptpkit_sessions_up") == 0
        # A head beyond the cap is not read to its end: the connection is closed.
        assert await fetch(address, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_HEAD) == b""
        # A client that sends nothing does not hold the stop up.
        _, idle = await asyncio.open_connection(*address)
        await asyncio.sleep(0.05)
        await asyncio.wait_for(metrics.stop(), 5)
        assert metrics.address is None
        with pytest.raises(OSError):
            await asyncio.open_connection(*address)
        idle.close()

    run(main())


def test_served_on_ipv6_loopback() -> None:
    async def main() -> None:
        host, _ = metrics_address("[::1]:9100")
        metrics = Metrics((host, 0))  # the flag's address, any free port
        await metrics.start(FakeTable(), FakeServer())  # type: ignore[arg-type]
        try:
            address = metrics.address
            assert address is not None and address[0] == "::1"
            answer = await fetch(address, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 OK") and b"pptpkit_sessions_up 0.0" in answer
        finally:
            await metrics.stop()

    run(main())


# -- the flag ---------------------------------------------------------------------------------------


def test_metrics_address_forms() -> None:
    assert metrics_address("198.51.100.1:9100") == ("198.51.100.1", 9100)
    assert metrics_address("[::1]:9100") == ("::1", 9100)
    assert metrics_address("[::]:9100") == ("::", 9100)
    for bad in ("9100", ":9100", "198.51.100.1", "198.51.100.1:0", "198.51.100.1:70000", "::1:9100",
                "[198.51.100.1]:9100", "host:9100", "[::1]:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            metrics_address(bad)


def test_metrics_flag_builds_the_extension_last_and_program_mode_refuses_it() -> None:
    pool = ("--local-ip", "198.51.100.1", "--remote-ip", "198.51.100.10-50")
    settings = server_settings(build_parser().parse_args(["server", *pool, "--metrics", "[::1]:9100"]))
    assert settings.metrics == ("::1", 9100)
    found = extensions(settings)
    assert isinstance(found[-1], Metrics) and found[-1].listen == ("::1", 9100)
    assert not any(isinstance(e, Metrics) for e in extensions(server_settings(
        build_parser().parse_args(["server", *pool]))))
    program = build_parser().parse_args(["server", "--ppp-program", "/bin/cat", "--delegate",
                                         "--metrics", "127.0.0.1:9100"])
    with pytest.raises(ConfigError, match="--metrics applies to the built-in mode"):
        program_config(server_settings(program))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", *pool, "--metrics", "9100"])
