"""pptpd's program mode: the PPP program's argv (pptpctrl's, see INTEROP.md) and its settings."""

from __future__ import annotations

import pytest

from pptpkit.compat.program import PppProgramConfig, ppp_program_argv
from pptpkit.errors import ConfigError


def test_program_argv_like_pptpd_noipparam() -> None:
    cfg = PppProgramConfig(program="/usr/sbin/pppd", noipparam=True)
    argv = ppp_program_argv(cfg, "192.0.2.1", ("198.51.100.1", "198.51.100.2"))
    assert argv == ["/usr/sbin/pppd", "local", "115200", "198.51.100.1:198.51.100.2", "remotenumber",
                    "192.0.2.1"]


def test_program_argv_full() -> None:
    cfg = PppProgramConfig(program="/p", program_args=("-m", "mod"), option_file="/etc/ppp/opts",
                           speed="9600")
    argv = ppp_program_argv(cfg, "192.0.2.7", ("198.51.100.1", "198.51.100.5"))
    assert argv == ["/p", "-m", "mod", "local", "file", "/etc/ppp/opts", "9600",
                    "198.51.100.1:198.51.100.5", "ipparam", "192.0.2.7", "remotenumber", "192.0.2.7"]


def test_program_argv_delegate() -> None:
    cfg = PppProgramConfig(program="/p", delegate=True)
    assert ppp_program_argv(cfg, "192.0.2.7", None) == [
        "/p", "local", "115200", "ipparam", "192.0.2.7", "remotenumber", "192.0.2.7"]


def test_bad_speed_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="speed"):
        PppProgramConfig(program="/p", speed="fast")


def test_programs_are_capped_in_all_and_per_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client decides how many calls it opens; each is a process: calls beyond the caps are
    refused as Busy before anything is spawned, and a program's end frees its place."""
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from pptpkit.compat import program
    from pptpkit.pptp.server import RejectCall

    spawned: list[list[str]] = []
    handlers: list[Any] = []

    async def fake_spawn(argv: list[str], **_: object) -> object:
        spawned.append(argv)
        return SimpleNamespace(pid=1000 + len(spawned))

    class FakeHandler:
        def __init__(self, call: object, proc: object, config: object, pool: object, pair: object,
                     on_closed: Any = None) -> None:
            self.on_closed = on_closed
            handlers.append(self)

    monkeypatch.setattr(program, "spawn_on_pty", fake_spawn)
    monkeypatch.setattr(program, "ProgramHandler", FakeHandler)
    factory = program.ppp_program_factory(PppProgramConfig(
        program="/p", delegate=True, max_programs=3, max_programs_per_source=2))

    def call(source: str) -> Any:
        return SimpleNamespace(peer_address=source, call_id=len(spawned) + 1)

    async def main() -> None:
        await factory(call("192.0.2.2"))
        await factory(call("192.0.2.2"))
        with pytest.raises(RejectCall, match=r"2 PPP programs for 192\.0\.2\.2") as busy:
            await factory(call("192.0.2.2"))
        assert busy.value.result == 4  # Busy
        await factory(call("192.0.2.3"))
        with pytest.raises(RejectCall, match="3 PPP programs running"):
            await factory(call("192.0.2.4"))
        assert len(spawned) == 3
        handlers[0].on_closed()  # the first program was reaped
        await factory(call("192.0.2.2"))
        assert len(spawned) == 4

    asyncio.run(main())


def test_program_caps_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_programs"):
        PppProgramConfig(program="/p", max_programs=0)
