"""``pptpkit connect`` policy, sans-IO: exit codes, classification of session ends, backoff,
the GRE watchdog, route planning (the loop refusal), resolv.conf handling, argument parsing."""

from __future__ import annotations

import argparse
import io
import ipaddress
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.auth.methods import AuthMethod
from pptpkit.cli.connect import PASSWORD_ENV, ConnectUsageError, config_from_args, read_password
from pptpkit.cli.main import build_parser
from pptpkit.control.events import CloseCause
from pptpkit.errors import ConfigError, PptpkitError
from pptpkit.ppp.session_config import LinkDown, LinkUp, MppePolicy, Outcome
from pptpkit.pptp.client import ControlConnectionError
from pptpkit.vpn.connect import (
    PERMANENT_CODES,
    AttemptResult,
    Backoff,
    ConnectConfig,
    ExitCode,
    Failure,
    GreWatchdog,
    classify_link_down,
    control_failure,
    gre_blocked_failure,
    up_status,
)
from pptpkit.vpn.resolv import MARKER, ResolvConf, ResolvConfError, render_resolv_conf
from pptpkit.vpn.routes import DEFAULT_ROUTE_HALVES, RouteLoopError, check_no_loop, parse_route, plan_routes

SERVER = IPv4Address("192.0.2.1")


def down(outcome: Outcome, reason: str = "r") -> LinkDown:
    return LinkDown(outcome=outcome, reason=reason, exit_status=outcome.exit_status)


# -- exit codes ---------------------------------------------------------------------------------------


def test_exit_codes_are_pppds_where_pppd_has_them() -> None:
    # pppd.h: EXIT_CONNECT_FAILED 8, NEGOTIATION_FAILED 10, PEER_DEAD 15, HANGUP 16, AUTH_TOPEER 19
    assert (ExitCode.CONNECT_FAILED, ExitCode.NEGOTIATION_FAILED, ExitCode.PEER_DEAD, ExitCode.HANGUP,
            ExitCode.AUTH_FAILED, ExitCode.LOOPBACK) == (8, 10, 15, 16, 19, 17)
    from pptpkit.cli.common import exit_help

    for code in ExitCode:
        # USER_REQUEST: pptpkit ppp's alone, like pppd; 40 and up: pptpkit ctl's.
        if code is not ExitCode.USER_REQUEST and code < 40:
            assert f"\n{int(code):>4}  " in "\n" + exit_help("connect"), code


@pytest.mark.parametrize(
    ("outcome", "was_up", "code", "permanent"),
    [
        (Outcome.AUTH_TOPEER_FAILED, False, ExitCode.AUTH_FAILED, True),
        (Outcome.MPPE_REFUSED, False, ExitCode.NEGOTIATION_FAILED, True),
        (Outcome.NEGOTIATION_FAILED, False, ExitCode.NEGOTIATION_FAILED, False),
        (Outcome.PEER_TERMINATED, True, ExitCode.HANGUP, False),
        (Outcome.PEER_TERMINATED, False, ExitCode.NEGOTIATION_FAILED, False),
        (Outcome.LOWER_LAYER_DOWN, True, ExitCode.HANGUP, False),
        (Outcome.LOWER_LAYER_DOWN, False, ExitCode.HANGUP, False),
        (Outcome.PEER_DEAD, True, ExitCode.PEER_DEAD, False),
        (Outcome.LOOPBACK, False, ExitCode.LOOPBACK, False),
        (Outcome.IDLE_TIMEOUT, True, ExitCode.IDLE_TIMEOUT, False),
    ],
)
def test_classify_link_down(outcome: Outcome, was_up: bool, code: ExitCode, permanent: bool) -> None:
    failure = classify_link_down(down(outcome), server="192.0.2.1", was_up=was_up)
    assert failure is not None
    assert failure.code == code and failure.permanent == permanent
    assert "\n" not in failure.message


def test_local_close_is_no_failure() -> None:
    assert classify_link_down(down(Outcome.LOCAL_CLOSE), server="s", was_up=True) is None


def test_server_refusing_mppe_is_permanent() -> None:
    # What pppd's server sends when we refused MPPE it requires.
    failure = classify_link_down(down(Outcome.PEER_TERMINATED, "MPPE required but peer refused"),
                                 server="s", was_up=False)
    assert failure is not None and failure.code == ExitCode.NEGOTIATION_FAILED and failure.permanent
    assert "MPPE required but peer refused" in failure.message


def test_wrong_password_message() -> None:
    failure = classify_link_down(down(Outcome.AUTH_TOPEER_FAILED), server="192.0.2.1", was_up=False)
    assert failure is not None and "authentication to 192.0.2.1 failed" in failure.message


def test_gre_blocked_message_is_exact() -> None:
    failure = gre_blocked_failure("192.0.2.1")
    assert failure.code == ExitCode.GRE_BLOCKED == 31 and not failure.permanent
    assert failure.message == ("GRE return path broken: the control connection to 192.0.2.1 works but "
                               "no GRE (IP protocol 47) packet came back (a firewall dropping GRE, or a "
                               "NAT without PPTP support?)")


@pytest.mark.parametrize(
    ("cause", "code"),
    [
        (None, ExitCode.CONTROL_UNREACHABLE),
        (CloseCause.START_REPLY_TIMEOUT, ExitCode.CONTROL_UNREACHABLE),
        (CloseCause.CONNECTION_LOST, ExitCode.CONTROL_UNREACHABLE),
        (CloseCause.START_REJECTED, ExitCode.CONNECT_FAILED),
        (CloseCause.VERSION_MISMATCH, ExitCode.CONNECT_FAILED),
        (CloseCause.STOPPED_BY_PEER, ExitCode.CONNECT_FAILED),
    ],
)
def test_control_failure(cause: CloseCause | None, code: ExitCode) -> None:
    assert control_failure(ControlConnectionError("x", cause=cause), "192.0.2.1", 1723).code == code


def test_control_failure_without_raw_socket_permission() -> None:
    try:
        try:
            raise PermissionError(1, "Operation not permitted")
        except PermissionError as inner:
            raise ControlConnectionError("cannot open a raw GRE socket") from inner
    except ControlConnectionError as exc:
        failure = control_failure(exc, "s", 1723)
    assert failure.code == ExitCode.NOT_PERMITTED and failure.permanent


def test_permanent_codes() -> None:
    assert ExitCode.AUTH_FAILED in PERMANENT_CODES and ExitCode.ROUTE_LOOP in PERMANENT_CODES
    assert ExitCode.HANGUP not in PERMANENT_CODES and ExitCode.GRE_BLOCKED not in PERMANENT_CODES


# -- backoff and watchdog -----------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_link() -> None:
    b = Backoff(initial=1, cap=60, stable_after=30, jitter=0)
    delays = [b.next_delay(None) for _ in range(9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert b.next_delay(5.0) == 60  # a short-lived link does not reset
    assert b.next_delay(30.0) == 1
    assert b.next_delay(None) == 2


def test_backoff_jitter_spreads_clients_below_the_nominal_delay() -> None:
    draws = iter([0.0, 1.0, 0.5])
    b = Backoff(initial=4, cap=60, jitter=0.25, random=lambda: next(draws))
    assert [b.next_delay(None) for _ in range(3)] == [4.0, 6.0, 14.0]  # 4, 8*0.75, 16*0.875
    many = [Backoff(initial=8, cap=60).next_delay(None) for _ in range(200)]
    assert all(6.0 <= d <= 8.0 for d in many) and max(many) - min(many) > 1.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        Backoff(initial=0)
    with pytest.raises(ConfigError):
        Backoff(initial=5, cap=1)


def test_watchdog() -> None:
    w = GreWatchdog(4.0)
    assert w.get_timer() is None and not w.expired(100.0)
    w.start(10.0)
    assert w.get_timer() == 14.0
    assert not w.expired(13.9)
    assert w.expired(14.0)
    w.gre_seen()
    assert w.get_timer() is None and not w.expired(20.0)
    w.start(30.0)  # a new call: armed again
    assert w.expired(34.0)
    with pytest.raises(ConfigError):
        GreWatchdog(0)


# -- routes -------------------------------------------------------------------------------------------


def test_default_route_is_two_halves() -> None:
    plan = plan_routes(SERVER, [IPv4Network("203.0.113.0/24")], default_route=True, host_route_pinned=True)
    assert plan.tunnel_routes == (IPv4Network("203.0.113.0/24"), *DEFAULT_ROUTE_HALVES)
    assert sum(n.num_addresses for n in DEFAULT_ROUTE_HALVES) == 2**32


def test_covering_routes_need_the_host_route() -> None:
    net = IPv4Network("192.0.2.0/24")
    assert plan_routes(SERVER, [net], default_route=False, host_route_pinned=True).tunnel_routes == (net,)
    with pytest.raises(RouteLoopError, match=r"covers the server 192\.0\.2\.1"):
        plan_routes(SERVER, [net], default_route=False, host_route_pinned=False)
    with pytest.raises(RouteLoopError, match="--default-route covers"):
        plan_routes(SERVER, [], default_route=True, host_route_pinned=False)
    # Routes that do not cover the server are fine without the pin.
    other = IPv4Network("203.0.113.0/24")
    plan = plan_routes(SERVER, [other], default_route=False, host_route_pinned=False)
    assert plan.tunnel_routes == (other,)


def test_server_host_route_through_the_tunnel_is_always_refused() -> None:
    with pytest.raises(RouteLoopError, match="the server itself"):
        plan_routes(SERVER, [IPv4Network("192.0.2.1/32")], default_route=False, host_route_pinned=True)


def test_duplicate_routes_dropped() -> None:
    net = IPv4Network("203.0.113.0/24")
    plan = plan_routes(SERVER, [net, net], default_route=False, host_route_pinned=True)
    assert plan.tunnel_routes == (net,)


def test_check_no_loop() -> None:
    check_no_loop(SERVER, "pptp0", "veth0")
    check_no_loop(SERVER, "pptp0", None)
    with pytest.raises(RouteLoopError, match=r"through 128\.0\.0\.0/1"):
        check_no_loop(SERVER, "pptp0", "pptp0", DEFAULT_ROUTE_HALVES)


@pytest.mark.parametrize(("text", "net"), [("203.0.113.0/24", "203.0.113.0/24"),
                                           ("198.51.100.7", "198.51.100.7/32"), (" 0.0.0.0/0 ", "0.0.0.0/0")])
def test_parse_route(text: str, net: str) -> None:
    assert parse_route(text) == IPv4Network(net)


@pytest.mark.parametrize("text", ["203.0.113.1/24", "300.0.0.0/8", "x", "", "1.2.3.4/33", "::/0"])
def test_parse_route_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_route(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_route_fuzz(text: str) -> None:
    try:
        net = parse_route(text)
    except PptpkitError:
        return
    assert isinstance(net, IPv4Network)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=8), st.booleans(),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_plan_routes_never_routes_the_server_unpinned(nets: list[tuple[int, int]], default: bool,
                                                      pinned: bool, server_int: int) -> None:
    server = IPv4Address(server_int)
    requested = [IPv4Network((addr, plen), strict=False) for addr, plen in nets]
    try:
        plan = plan_routes(server, requested, default_route=default, host_route_pinned=pinned)
    except RouteLoopError:
        assert any(server in n for n in requested) or default
        return
    for net in plan.tunnel_routes:
        assert server not in net or (pinned and net.prefixlen < 32)


# -- resolv.conf --------------------------------------------------------------------------------------


def test_render_keeps_search_and_caps_nameservers() -> None:
    original = "nameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n# comment\n"
    servers = [IPv4Address(f"203.0.113.{i}") for i in range(1, 6)]
    text = render_resolv_conf(servers, original, backup="/b")
    lines = text.splitlines()
    assert lines[0] == MARKER
    assert [ln for ln in lines if ln.startswith("nameserver")] == [
        "nameserver 203.0.113.1", "nameserver 203.0.113.2", "nameserver 203.0.113.3"]
    assert "search example.test" in lines and "options ndots:2" in lines
    assert "nameserver 192.0.2.53" not in lines


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_render_fuzz(original: str) -> None:
    text = render_resolv_conf([IPv4Address("203.0.113.1")], original, backup="/b")
    assert text.startswith(MARKER) and "nameserver 203.0.113.1\n" in text


def test_resolv_apply_restore(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\nsearch example.test\n")
    link = tmp_path / "link.conf"
    link.symlink_to(path)
    rc = ResolvConf(link)
    rc.apply([IPv4Address("203.0.113.9")])
    assert link.is_symlink()  # written through the link, not replaced
    assert "nameserver 203.0.113.9" in path.read_text() and rc.backup.exists()
    rc.apply([IPv4Address("203.0.113.10")])  # a reconnect: the original is still the first one
    rc.restore()
    assert path.read_text() == "nameserver 192.0.2.53\nsearch example.test\n"
    assert not rc.backup.exists() and link.is_symlink()
    rc.restore()  # idempotent


def test_resolv_restore_removes_a_file_that_did_not_exist(tmp_path: Path) -> None:
    rc = ResolvConf(tmp_path / "resolv.conf")
    rc.apply([IPv4Address("203.0.113.9")])
    rc.restore()
    assert not (tmp_path / "resolv.conf").exists()


def test_resolv_leaves_someone_elses_change(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\n")
    rc = ResolvConf(path)
    rc.apply([IPv4Address("203.0.113.9")])
    path.write_text("nameserver 192.0.2.99\n")
    rc.restore()
    assert path.read_text() == "nameserver 192.0.2.99\n"
    assert not rc.backup.exists()


def test_resolv_recover_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\n")
    ResolvConf(path).apply([IPv4Address("203.0.113.9")])  # and then the process "dies"
    assert path.read_text().startswith(MARKER)
    assert ResolvConf(path).recover()
    assert path.read_text() == "nameserver 192.0.2.53\n"
    assert not ResolvConf(path).recover()


def test_resolv_errors(tmp_path: Path) -> None:
    with pytest.raises(ResolvConfError):
        render_resolv_conf([], "", backup="/b")
    rc = ResolvConf(tmp_path / "missing-dir" / "resolv.conf")
    with pytest.raises(ResolvConfError):
        rc.apply([IPv4Address("203.0.113.9")])
    assert not rc.active


# -- command line -------------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["connect", *argv])


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse("192.0.2.1", "-u", "alice")
    cfg = config_from_args(args, "pw")
    assert cfg.server == SERVER and cfg.port == 1723 and cfg.username == "alice"
    assert cfg.mppe == MppePolicy()  # accept what the server offers, 40 or 128, stateless
    assert cfg.mppe.bits_128 and not cfg.mppe.required
    assert cfg.refuse == frozenset() and cfg.host_route and not cfg.dns and not cfg.persist
    assert cfg.effective_gre_timeout == 10.0  # three LCP restarts plus one second
    session = cfg.session_config()
    assert session.peer is not None and session.peer.password == "pw" and session.request_dns
    assert cfg.local_address is None and not cfg.nobuffer and cfg.respect_peer_window


def test_transport_flags() -> None:
    cfg = config_from_args(parse("192.0.2.1", "-u", "a", "--local-address", "192.0.2.2", "--nobuffer",
                                 "--ignore-peer-window"), "pw")
    assert cfg.local_address == ipaddress.IPv4Address("192.0.2.2")
    assert cfg.nobuffer and not cfg.respect_peer_window
    with pytest.raises(SystemExit):
        parse("192.0.2.1", "-u", "a", "--local-address", "host.example")


@pytest.mark.parametrize(
    ("flags", "bits40", "bits128", "required", "stateful"),
    [
        (["--require-mppe-128"], False, True, True, False),
        (["--require-mppe"], True, True, True, False),
        (["--no-mppe"], False, False, False, False),
        (["--no-mppe-40"], False, True, False, False),
        (["--mppe-stateful"], True, True, False, True),
        (["--require-mppe", "--no-mppe-40"], False, True, True, False),
    ],
)
def test_mppe_flags(flags: list[str], bits40: bool, bits128: bool, required: bool, stateful: bool) -> None:
    cfg = config_from_args(parse("192.0.2.1", "-u", "a", *flags), "pw")
    m = cfg.mppe
    assert (m.bits_40, m.bits_128, m.required, m.stateful) == (bits40, bits128, required, stateful)


@pytest.mark.parametrize("flags", [["--no-mppe", "--require-mppe"], ["--no-mppe", "--require-mppe-128"],
                                   ["--require-mppe-128", "--no-mppe-128"],
                                   ["--refuse-pap", "--refuse-chap", "--refuse-mschap", "--refuse-mschap-v2",
                                    "--refuse-eap"]])
def test_contradictions_are_usage_errors(flags: list[str]) -> None:
    with pytest.raises(ConnectUsageError):
        config_from_args(parse("192.0.2.1", "-u", "a", *flags), "pw")


def test_refuse_and_routes() -> None:
    cfg = config_from_args(parse("192.0.2.1", "-u", "a", "--refuse-pap", "--refuse-eap", "--route",
                                 "203.0.113.0/24", "--route", "198.51.100.7", "--default-route",
                                 "--no-host-route", "--dns", "--resolv-conf", "/tmp/x", "--persist",
                                 "--max-retries", "3", "--mtu", "1400", "--lcp-restart", "1"), "pw")
    assert cfg.refuse == frozenset({AuthMethod.PAP, AuthMethod.EAP})
    assert cfg.routes == (IPv4Network("203.0.113.0/24"), IPv4Network("198.51.100.7/32"))
    assert cfg.default_route and not cfg.host_route and cfg.dns and cfg.resolv_conf == "/tmp/x"
    assert cfg.persist and cfg.max_retries == 3 and cfg.mtu == 1400 and cfg.effective_gre_timeout == 4.0


@pytest.mark.parametrize("argv", [["192.0.2.1", "-u", "a", "--route", "203.0.113.1/24"],
                                  ["192.0.2.1", "-u", "a", "--port", "0"],
                                  ["192.0.2.1", "-u", "a", "--mtu", "100"],
                                  ["192.0.2.1", "-u", "a", "--password", "x"]])
def test_bad_command_lines(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored\n")
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert read_password(parse("192.0.2.1", "-u", "a", "--password-file", str(pw))) == "s3cret"
    assert read_password(parse("192.0.2.1", "-u", "a")) == "from-env"
    monkeypatch.delenv(PASSWORD_ENV)
    monkeypatch.setattr("sys.stdin", io.StringIO())  # not a terminal: no prompt
    with pytest.raises(ConnectUsageError, match="no password"):
        read_password(parse("192.0.2.1", "-u", "a"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConnectUsageError, match="empty"):
        read_password(parse("192.0.2.1", "-u", "a", "--password-file", str(empty)))
    with pytest.raises(ConnectUsageError, match="cannot read"):
        read_password(parse("192.0.2.1", "-u", "a", "--password-file", str(tmp_path / "nope")))


def test_usage_error_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from pptpkit.cli.main import main

    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert main(["connect", "192.0.2.1", "-u", "a"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no password" in err[0]


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        ConnectConfig(server=SERVER, username="a", password="p", mtu=10)
    with pytest.raises(ConfigError):
        ConnectConfig(server=SERVER, username="a", password="p", max_retries=-1)
    with pytest.raises(ConfigError):
        ConnectConfig(server=SERVER, username="a", password="p", ifname="x" * 16)


# -- the --persist loop (attempts faked) --------------------------------------------------------------


def _run_with(results: list[AttemptResult], **cfg: object) -> tuple[int, list[dict[str, object]], int]:
    import asyncio

    from pptpkit.vpn.connect import Connector

    config = ConnectConfig(server=SERVER, username="a", password="p", backoff_initial=0.001,
                           backoff_cap=0.004, backoff_jitter=0, **cfg)  # type: ignore[arg-type]
    statuses: list[dict[str, object]] = []
    queue = list(results)

    async def main() -> tuple[int, int]:
        connector = Connector(config, on_status=statuses.append)

        async def attempt() -> AttemptResult:
            if not queue:
                connector.stop.set()
                return AttemptResult(None, stopped=True)
            return queue.pop(0)

        connector.attempt = attempt  # type: ignore[method-assign]
        code = await connector.run()
        return int(code), connector.attempts

    code, attempts = asyncio.run(main())
    return code, statuses, attempts


HANGUP = Failure(code=ExitCode.HANGUP, message="hung up")
WRONG_PASSWORD = Failure(code=ExitCode.AUTH_FAILED, message="bad", permanent=True)


def test_without_persist_the_first_failure_ends_it() -> None:
    code, statuses, attempts = _run_with([AttemptResult(HANGUP)])
    assert (code, attempts) == (16, 1)
    assert statuses == [{"event": "down", "code": 16, "message": "hung up", "permanent": False}]


def test_persist_retries_transient_failures_with_backoff() -> None:
    code, statuses, attempts = _run_with([AttemptResult(HANGUP)] * 3, persist=True)
    assert code == 0 and attempts == 4  # the fourth attempt is the user's stop
    assert [s["delay"] for s in statuses if s["event"] == "retry"] == [0.001, 0.002, 0.004]


def test_persist_stops_at_a_permanent_failure() -> None:
    code, _, attempts = _run_with([AttemptResult(HANGUP), AttemptResult(WRONG_PASSWORD),
                                   AttemptResult(HANGUP)], persist=True)
    assert (code, attempts) == (19, 2)
    mppe = Failure(code=ExitCode.NEGOTIATION_FAILED, message="MPPE required", permanent=True)
    assert _run_with([AttemptResult(mppe)], persist=True)[0] == 10


def test_persist_max_retries() -> None:
    code, _, attempts = _run_with([AttemptResult(HANGUP)] * 5, persist=True, max_retries=2)
    assert (code, attempts) == (16, 3)


def test_backoff_resets_after_a_stable_link() -> None:
    long_up = AttemptResult(HANGUP, up_for=3600.0)
    _, statuses, _ = _run_with([AttemptResult(HANGUP), AttemptResult(HANGUP), long_up], persist=True)
    assert [s["delay"] for s in statuses if s["event"] == "retry"] == [0.001, 0.002, 0.001]


def test_up_event_carries_setup_ms() -> None:
    # `bench setup` splits the protocol part of a connect out of the process's wall time.
    up = LinkUp(local_address=IPv4Address("198.51.100.10"), peer_address=IPv4Address("198.51.100.1"),
                dns_servers=(), nbns_servers=(), local_ipv6_id=None, peer_ipv6_id=None, mtu=1396,
                mppe="MPPE-128 stateless", auth_method=AuthMethod.MSCHAP_V2, username="alice")
    status = up_status(up, "pptp0", [], str(SERVER), 0.0123456)
    assert status["event"] == "up" and status["setup_ms"] == 12.346
    assert up_status(up, "pptp0", [], str(SERVER))["setup_ms"] is None


def test_ccp_unanswered_is_retried_by_persist_but_a_refusal_is_not() -> None:
    """A lossy path can leave CCP unanswered: --persist tries again (the soak saw clients give
    up for good here); an MPPE refusal by the server stays permanent."""
    from pptpkit.ppp.session_config import LinkDown, Outcome
    from pptpkit.vpn.connect import classify_link_down

    lost = classify_link_down(LinkDown(outcome=Outcome.NEGOTIATION_FAILED, reason="no answer to CCP "
                                       "Configure-Request", exit_status=10), server="s", was_up=False)
    assert lost is not None and not lost.permanent and int(lost.code) == 10
    refused = classify_link_down(LinkDown(outcome=Outcome.MPPE_REFUSED, reason="MPPE required but peer "
                                          "refused", exit_status=10), server="s", was_up=False)
    assert refused is not None and refused.permanent
