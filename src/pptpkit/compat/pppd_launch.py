"""``pptpkit connect SERVER --pppd [pppd options...]``: pptp-linux's classic mode.

Like ``pptp SERVER [pppd options]``: get a call to SERVER (through the call manager by default,
so every such process to one server shares its control connections, as many calls on each as
the server's Maximum Channels allows, see :mod:`pptpkit.compat.callmgr`), open a raw pty,
start pppd with the pty slave as its terminal (stdin and stdout, as pptpctrl does; pppd uses
the terminal on its stdin when it is given no device) and the user's options, and move the
frames between the pty (async HDLC) and the call.  The exit status is pppd's.

Ends: pppd exits -> the call is hung up.  The call ends (server cleared it, control connection
lost) -> the pty master is closed, which pppd sees as a hang-up (its status 16), and pppd is
stopped if it lingers.  SIGINT/SIGTERM/SIGHUP -> SIGTERM to pppd (it terminates LCP and
exits 5), then the call is hung up.

Exit statuses that do not come from pppd: 8 (pppd's EXIT_CONNECT_FAILED) when the control
connection or the call could not be set up, 1 when pppd could not be started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pptpkit.compat.callmgr import ManagedCall, ManagedClient
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.pty import PtyProcess, spawn_on_pty
from pptpkit.pptp.client import (
    CallRefusedError,
    ControlConnectionError,
    PptpCall,
    PptpClient,
    PptpClientConfig,
)

__all__ = [
    "DEFAULT_PPPD",
    "ENV_PPPD",
    "EXIT_CONNECT_FAILED",
    "EXIT_FATAL",
    "PppdLaunchConfig",
    "run_connect_pppd",
    "run_pppd_bridge",
]

log = logging.getLogger(__name__)

DEFAULT_PPPD: Final = "/usr/sbin/pppd"
ENV_PPPD: Final = "PPTPKIT_PPPD"
EXIT_FATAL: Final = 1
EXIT_CONNECT_FAILED: Final = 8
#: Seconds pppd gets to end by itself after a hang-up or SIGTERM before it is killed.
PPPD_STOP_TIMEOUT: Final = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class PppdLaunchConfig:
    """``client``: the PPTP side.  ``pppd``: the program (anything speaking PPP in async HDLC on
    its stdin/stdout, e.g. a wrapper around ``pptpkit ppp``).  ``pppd_args``: its options,
    passed unchanged.  ``callmgr``: hand the call to the call manager, which shares control
    connections between processes (pptp-linux's behaviour); False keeps a connection of our
    own.  ``stderr``: where pppd's stderr goes (an fd, a path, or None for /dev/null)."""

    client: PptpClientConfig
    pppd: str = DEFAULT_PPPD
    pppd_args: tuple[str, ...] = ()
    callmgr: bool = True
    stderr: int | str | None = 2


async def _open_call(config: PppdLaunchConfig) -> tuple[PptpClient | ManagedClient, PptpCall | ManagedCall]:
    client: PptpClient | ManagedClient = (ManagedClient(config.client) if config.callmgr
                                          else PptpClient(config.client))
    await client.connect()
    try:
        return client, await client.open_call()
    except BaseException:
        await client.close()
        raise


async def run_pppd_bridge(config: PppdLaunchConfig) -> int:
    """Run until pppd exits; returns its exit status (or 8/1, see the module docstring)."""
    try:
        client, call = await _open_call(config)
    except CallRefusedError as exc:
        log.error("the server refused the call: %s (result code %s)", exc, exc.result_code)
        return EXIT_CONNECT_FAILED
    except ControlConnectionError as exc:
        log.error("control connection to %s failed: %s", config.client.server, exc)
        return EXIT_CONNECT_FAILED
    log.info("call up (call ID %d, peer call ID %d): starting %s", call.call_id, call.peer_call_id,
             config.pppd)
    try:
        proc = await spawn_on_pty([config.pppd, *config.pppd_args], stderr=config.stderr)
    except OSError as exc:
        log.error("cannot start %s: %s", config.pppd, exc)
        await call.close()
        await client.close()
        return EXIT_FATAL
    return await _bridge(config, client, call, proc)


async def _bridge(config: PppdLaunchConfig, client: PptpClient | ManagedClient,
                  call: PptpCall | ManagedCall, proc: PtyProcess) -> int:
    loop = asyncio.get_running_loop()
    def to_call(frame: bytes) -> None:
        call.send_frame(frame)

    def to_pppd(frame: bytes) -> None:
        bridge.send_frame(frame)

    bridge = HdlcStreamBridge(proc.stream, on_frame=to_call)
    call.on_frame = to_pppd
    bridge.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    waiters: dict[asyncio.Future[object], str] = {
        asyncio.ensure_future(asyncio.shield(proc.exited)): "pppd",
        asyncio.ensure_future(asyncio.shield(call.closed)): "call",
        asyncio.ensure_future(stop.wait()): "signal",
    }
    try:
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for fut in pending:
            fut.cancel()
        why = next(waiters[f] for f in done)
        if why == "signal" and not proc.exited.done():
            log.info("signal: stopping pppd")
            await proc.stop(PPPD_STOP_TIMEOUT)  # SIGTERM first: pppd ends LCP politely
        elif why == "call" and not proc.exited.done():
            log.info("the call ended (%s): hanging up pppd's line", call.closed.result().reason)
            # Closing the master is a modem hang-up for pppd (SIGHUP/EIO): it exits 16.
            bridge.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.exited), PPPD_STOP_TIMEOUT)
            await proc.stop(2.0)
        status = await proc.exited
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        bridge.close()
        if not call.closed.done():
            await call.close()
        await client.close()
    if status < 0:
        # Killed by a signal: report it the way a shell does.
        status = 128 - status
    log.info("pppd exited with status %d", status)
    return status


def run_connect_pppd(server: str, pppd_args: Sequence[str], *, port: int = 1723,
                     timeout: float = 10.0, window: int = 64, nobuffer: bool = False,
                     pppd: str | None = None, callmgr: bool = True) -> int:
    """The ``connect --pppd`` entry point (blocking; runs its own event loop).  ``pppd`` None:
    ``$PPTPKIT_PPPD``, else /usr/sbin/pppd."""
    pppd = pppd or os.environ.get(ENV_PPPD) or DEFAULT_PPPD
    client = PptpClientConfig(server=server, port=port, connect_timeout=timeout,
                              call_timeout=timeout, window=window, nobuffer=nobuffer)
    config = PppdLaunchConfig(client=client, pppd=pppd, pppd_args=tuple(pppd_args), callmgr=callmgr)
    try:
        return asyncio.run(run_pppd_bridge(config))
    except KeyboardInterrupt:
        return 5


def main(argv: Sequence[str]) -> int:
    """``pptpkit connect SERVER [--port N] [--timeout S] [-v] --pppd [pppd options...]``."""
    import argparse
    import sys

    words = list(argv)
    cut = words.index("--pppd") if "--pppd" in words else len(words)
    p = argparse.ArgumentParser(prog="pptpkit connect",
                                usage="pptpkit connect SERVER [--port N] [--timeout S] [-v] "
                                      "--pppd [pppd options...]")
    p.add_argument("server", metavar="SERVER")
    p.add_argument("--port", type=int, default=1723)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-callmgr", action="store_true",
                   help="a control connection of our own instead of the shared one")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(words[:cut])
    if not 1 <= args.port <= 0xFFFF or not args.timeout > 0:
        p.error("bad --port or --timeout")
    logging.basicConfig(level=logging.WARNING if args.quiet else
                        logging.DEBUG if args.verbose else logging.INFO,
                        stream=sys.stderr, format="pptpkit[%(process)d]: %(message)s")
    import ipaddress
    import socket

    try:
        server = str(ipaddress.IPv4Address(args.server))
    except ValueError:
        try:
            server = str(socket.getaddrinfo(args.server, None, socket.AF_INET)[0][4][0])
        except OSError as exc:
            print(f"pptpkit connect: cannot resolve {args.server!r}: {exc}", file=sys.stderr)
            return 2
    return run_connect_pppd(server, words[cut + 1:], port=args.port, timeout=args.timeout,
                            callmgr=not args.no_callmgr)
