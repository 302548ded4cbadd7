"""pptpd's program mode: a PPP program (pppd, or anything that speaks async HDLC) on a pty per call.

This is pptpctrl's process model, kept for operators who need pppd's plugins or their existing
``options.pptpd``: the server answers the call, starts the program with pptpctrl's arguments
(INTEROP.md), and moves the call's PPP frames to and from the program's raw pty in async HDLC.
The address pool is pptpd's: a ``localip:remoteip`` pair is passed on the command line unless
``delegate`` leaves addresses to the program.  The program's exit clears the call, and the
call's end stops the program (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pptpkit.control import GeneralError, OutgoingCallResult
from pptpkit.errors import ConfigError
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.pty import PtyProcess, spawn_on_pty
from pptpkit.pptp.server import CallHandler, CallHandlerFactory, RejectCall, ServerCall
from pptpkit.vpn.pool import AddressPool

__all__ = ["PppProgramConfig", "ProgramHandler", "ppp_program_argv", "ppp_program_factory"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class PppProgramConfig:
    """How each call's program is started (pptpd's ppp / option / localip / remoteip /
    speed / noipparam / delegate settings).  ``pool`` None with ``delegate`` False passes no
    address pair either (the program decides)."""

    program: str
    program_args: tuple[str, ...] = ()
    #: Programs running (or starting) at once, in all and from one client address; beyond
    #: them a call is refused as Busy.  None: no cap (the pool, if any, is then the only one).
    max_programs: int | None = None
    max_programs_per_source: int | None = None
    option_file: str | None = None
    pool: AddressPool | None = None
    speed: str = "115200"
    noipparam: bool = False
    delegate: bool = False
    stop_timeout: float = 2.0
    stderr: int | str | None = 2

    def __post_init__(self) -> None:
        if not self.program:
            raise ConfigError("the PPP program must not be empty")
        for name in ("max_programs", "max_programs_per_source"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if not (self.speed.isascii() and self.speed.isdigit()):
            raise ConfigError(f"speed must be a number of bits per second, not {self.speed!r}")


def ppp_program_argv(config: PppProgramConfig, client_ip: str, pair: tuple[str, str] | None) -> list[str]:
    """pptpctrl's argv for the PPP program (INTEROP.md): program, local, [file F], speed,
    [LOCAL:REMOTE], [ipparam CLIENT], remotenumber CLIENT.  ``program_args`` (ours, not
    pptpd's) go right after the program, e.g. ``python -m module``."""
    argv = [config.program, *config.program_args, "local"]
    if config.option_file is not None:
        argv += ["file", config.option_file]
    argv.append(config.speed)
    if pair is not None:
        argv.append(f"{pair[0]}:{pair[1]}")
    if not config.noipparam:
        argv += ["ipparam", client_ip]
    argv += ["remotenumber", client_ip]
    return argv


class ProgramHandler:
    """One call's program: the call's frames go to its pty in async HDLC and back."""

    def __init__(self, call: ServerCall, proc: PtyProcess, config: PppProgramConfig,
                 pool: AddressPool | None, pair: tuple[str, str] | None,
                 on_closed: Callable[[], None] | None = None) -> None:
        self._call = call
        self._on_closed = on_closed
        self.proc = proc
        self._config = config
        self._pool = pool
        self._pair = pair
        #: Wall-clock start (``pptpkit ctl`` lists it).
        self.started = time.time()
        self._closed = False
        self.bridge = HdlcStreamBridge(proc.stream, on_frame=call.send_frame, on_close=self._pty_closed)
        proc.on_exit(self._exited)
        # The call hands its frames straight to the HDLC encoder.
        call.on_frame = self.bridge.send_frame
        self.bridge.start()

    @property
    def pair(self) -> tuple[str, str] | None:
        """The (local, remote) addresses passed to the program, if any."""
        return self._pair

    def _pty_closed(self, exc: BaseException | None) -> None:
        self._call.clear("the PPP program closed its terminal" + (f" ({exc})" if exc else ""))

    def _exited(self, status: int) -> None:
        log.info("PPP program %d for call %d exited with status %d", self.proc.pid, self._call.call_id,
                 status)
        self._call.clear(f"the PPP program exited with status {status}")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.proc.close(self._config.stop_timeout)
        finally:
            if self._pool is not None and self._pair is not None:
                self._pool.release(self._pair)
            if self._on_closed is not None:
                self._on_closed()


def ppp_program_factory(config: PppProgramConfig) -> CallHandlerFactory:
    """The pptpd-style data plane: spawn ``config.program`` on a raw pty for every call and
    bridge the call's frames to it in async HDLC.  The call is cleared when the program exits
    or closes its terminal; the program is stopped (SIGTERM, then SIGKILL) when the call ends.

    A client decides how many calls it opens (16 per control connection), and each costs a
    process: the programs are counted from before the spawn until the child is reaped, and
    calls beyond ``max_programs`` (in all) or ``max_programs_per_source`` are refused as Busy.
    """
    running: dict[str, int] = {}

    def release(source: str) -> None:
        left = running.get(source, 1) - 1
        if left > 0:
            running[source] = left
        else:
            running.pop(source, None)

    async def factory(call: ServerCall) -> CallHandler:
        source = call.peer_address
        if config.max_programs is not None and sum(running.values()) >= config.max_programs:
            raise RejectCall(f"{config.max_programs} PPP programs running already (the limit)",
                             result=OutgoingCallResult.BUSY)
        if config.max_programs_per_source is not None and \
                running.get(source, 0) >= config.max_programs_per_source:
            raise RejectCall(f"{config.max_programs_per_source} PPP programs for {source} already",
                             result=OutgoingCallResult.BUSY)
        pair: tuple[str, str] | None = None
        if config.pool is not None and not config.delegate:
            pair = config.pool.allocate()
            if pair is None:
                raise RejectCall("no free address in the remoteip pool", error=GeneralError.NO_RESOURCE)
        argv = ppp_program_argv(config, call.peer_address, pair)
        running[source] = running.get(source, 0) + 1
        try:
            proc = await spawn_on_pty(argv, stderr=config.stderr)
        except BaseException:
            release(source)
            if pair is not None and config.pool is not None:
                config.pool.release(pair)
            raise
        log.info("call %d: started %s (pid %d)", call.call_id, " ".join(argv), proc.pid)
        return ProgramHandler(call, proc, config, config.pool, pair, on_closed=lambda: release(source))

    return factory
