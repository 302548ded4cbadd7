"""The hook-script extension driven by notices: which script runs when, with what, and in what
order; plus where the scripts come from (flags, pppd's *-script options)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pptpkit.auth.methods import AuthMethod
from pptpkit.cli.main import build_parser
from pptpkit.cli.server import extensions, server_settings
from pptpkit.compat.userppp import load_options
from pptpkit.io.link import LinkStats
from pptpkit.ops.hooks import HookScripts, HookSettings
from pptpkit.ppp.session_config import LinkUp
from pptpkit.vpn.hooks import HookKind
from pptpkit.vpn.notices import SessionDown, SessionIpv6Down, SessionIpv6Up, SessionUp, TerminateCause


def link_up(v6: bool = False) -> LinkUp:
    return LinkUp(local_address=ipaddress.IPv4Address("198.51.100.1"),
                  peer_address=ipaddress.IPv4Address("198.51.100.10"), dns_servers=(), nbns_servers=(),
                  local_ipv6_id=bytes(7) + b"\x01" if v6 else None,
                  peer_ipv6_id=bytes(7) + b"\x02" if v6 else None,
                  mtu=1396, mppe="none", auth_method=AuthMethod.MSCHAP_V2, username="alice")


def fake_session(loop: asyncio.AbstractEventLoop, sid: str = "S1") -> Any:
    link = SimpleNamespace(interface="pptpkit0", started_at=loop.time() - 5, loop=loop,
                           stats=LinkStats(octets_in=300, octets_out=700))
    return SimpleNamespace(id=sid, link=link, source="192.0.2.2", up=None)


def recorder(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls\nenv | sort > {tmp_path}/{name}.env\n')
    path.chmod(0o755)
    return str(path)


def env_of(tmp_path: Path, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (tmp_path / f"{name}.env").read_text().splitlines())


def run_notices(tmp_path: Path, v6_first: bool, ipparam: bool = True) -> list[str]:
    scripts = {kind: recorder(tmp_path, kind.value) for kind in HookKind}

    async def main() -> None:
        ext = HookScripts(HookSettings(scripts=scripts, timeout=5, speed=9600, ipparam=ipparam))
        table = SimpleNamespace(observers=[])
        await ext.start(table, None)  # type: ignore[arg-type]
        [observe] = table.observers
        session = fake_session(asyncio.get_running_loop())
        session.up = link_up(v6=v6_first)
        if not v6_first:
            observe(SessionIpv6Up(session, bytes(7) + b"\x01", bytes(7) + b"\x02"))  # before IPCP: waits
        observe(SessionUp(session, session.up))
        observe(SessionUp(session, session.up))  # IPCP renegotiated: nothing runs again
        if not v6_first:
            observe(SessionIpv6Up(session, bytes(7) + b"\x01", bytes(7) + b"\x02"))
            observe(SessionIpv6Down(session))
        observe(SessionDown(session, TerminateCause.USER_REQUEST, "bye", 4.0, 300, 700, 3, 7))
        await ext.stop()
        assert table.observers == []

    asyncio.run(main())
    return (tmp_path / "calls").read_text().splitlines()


def test_scripts_run_with_pppds_arguments_and_order(tmp_path: Path) -> None:
    calls = run_notices(tmp_path, v6_first=True)
    v6 = "pptpkit0  9600 fe80::1 fe80::2 192.0.2.2"
    assert sorted(calls) == sorted([
        "ip-up pptpkit0  9600 198.51.100.1 198.51.100.10 192.0.2.2", f"ipv6-up {v6}",
        "ip-down pptpkit0  9600 198.51.100.1 198.51.100.10 192.0.2.2", f"ipv6-down {v6}"])
    assert calls.index(next(c for c in calls if c.startswith("ip-up"))) < calls.index(
        next(c for c in calls if c.startswith("ip-down")))
    down = env_of(tmp_path, "ip-down")
    assert (down["IFNAME"], down["DEVICE"], down["SPEED"], down["PEERNAME"], down["LINKNAME"]) == (
        "pptpkit0", "", "9600", "alice", "S1")
    assert (down["BYTES_SENT"], down["BYTES_RCVD"], down["IPREMOTE"]) == ("700", "300", "198.51.100.10")
    assert int(down["CONNECT_TIME"]) >= 5
    assert env_of(tmp_path, "ipv6-up")["LLREMOTE"] == "fe80::2"


def test_ipv6_after_ipcp_and_ipv6_down_alone(tmp_path: Path) -> None:
    calls = run_notices(tmp_path, v6_first=False, ipparam=False)
    assert [c.split()[0] for c in calls].count("ipv6-up") == 1
    assert [c.split()[0] for c in calls].count("ipv6-down") == 1
    # noipparam: five arguments.
    assert "ip-up pptpkit0  9600 198.51.100.1 198.51.100.10" in calls


def test_session_that_never_came_up_runs_nothing(tmp_path: Path) -> None:
    scripts = {kind: recorder(tmp_path, kind.value) for kind in HookKind}

    async def main() -> None:
        ext = HookScripts(HookSettings(scripts=scripts))
        table = SimpleNamespace(observers=[])
        await ext.start(table, None)  # type: ignore[arg-type]
        session = fake_session(asyncio.get_running_loop())
        table.observers[0](SessionDown(session, TerminateCause.USER_ERROR, "auth", 0.0, 0, 0, 0, 0))
        await ext.stop()

    asyncio.run(main())
    assert not (tmp_path / "calls").exists()


def parse(*flags: str) -> Any:
    return server_settings(build_parser().parse_args(
        ["server", "--local-ip", "198.51.100.1", "--remote-ip", "198.51.100.10-20", *flags]))


def test_flags_choose_the_scripts() -> None:
    s = parse()
    assert (s.hooks, s.ip_up, s.ipv6_down) == (True, "/etc/ppp/ip-up", "/etc/ppp/ipv6-down")
    assert s.hook_timeout == 30.0
    [hooks] = [e for e in extensions(s) if isinstance(e, HookScripts)]
    assert hooks.settings.scripts[HookKind.IP_DOWN] == "/etc/ppp/ip-down" and hooks.settings.ipparam
    s = parse("--ip-up", "/x/up", "--ip-down", "/x/down", "--ipv6-up", "/x/6up", "--ipv6-down", "/x/6down",
              "--hook-timeout", "5", "--noipparam", "--speed", "9600", "--no-ctl")
    [hooks] = [e for e in extensions(s) if isinstance(e, HookScripts)]
    assert dict(hooks.settings.scripts) == {HookKind.IP_UP: "/x/up", HookKind.IP_DOWN: "/x/down",
                                            HookKind.IPV6_UP: "/x/6up", HookKind.IPV6_DOWN: "/x/6down"}
    assert (hooks.settings.timeout, hooks.settings.ipparam, hooks.settings.speed) == (5.0, False, 9600)
    assert not [e for e in extensions(parse("--no-hooks", "--no-ctl")) if isinstance(e, HookScripts)]


def test_pppd_options_name_the_scripts(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "options.pptpd").write_text("require-mschap-v2\nip-up-script /srv/up\nip-down-script /srv/down\n"
                                       "ipv6-up-script /srv/6up\nipv6-down-script /srv/6down\n")
    conf = tmp_path / "pptpd.conf"
    conf.write_text(f"option {etc}/options.pptpd\nlocalip 198.51.100.1\nremoteip 198.51.100.10-20\n"
                    "speed 57600\nnoipparam\n")
    s = server_settings(build_parser().parse_args(["server", "--config", str(conf)]), etc_dir=str(etc))
    assert (s.ip_up, s.ip_down, s.ipv6_up, s.ipv6_down) == ("/srv/up", "/srv/down", "/srv/6up", "/srv/6down")
    assert s.speed == 57600 and s.noipparam
    # A flag wins over the file.
    s = server_settings(build_parser().parse_args(["server", "--config", str(conf), "--ip-up", "/flag/up"]),
                        etc_dir=str(etc))
    assert (s.ip_up, s.ip_down) == ("/flag/up", "/srv/down")


def test_pptpkit_ppp_takes_the_script_options(tmp_path: Path) -> None:
    from pptpkit.compat.userppp import _script_path

    run = load_options(["noauth", "ip-up-script", "/srv/up"], {"PPTPKIT_PPP_ETC": str(tmp_path)})
    assert _script_path(run, "ip-up") == "/srv/up"
    assert _script_path(run, "ip-down") == str(tmp_path / "ip-down")  # pppd's default place
