"""``pptpkit pty SERVER``: one call, PPP frames in async HDLC on stdin/stdout (a pppd ``pty``
command, like ``pptp SERVER --nolaunchpppd``).

Exit statuses are the project's table (:mod:`pptpkit.cli.common`): a control connection that
cannot be opened is 30 and one the server refuses is 8, worded as ``pptpkit connect`` words them
(:func:`pptpkit.vpn.connect.control_failure`); a refused call is 8; a call cleared or a control
connection closed by the server is 16 (hang-up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from pptpkit.cli.argtypes import add_gre_options, int_range, ipv4, port, positive_float
from pptpkit.cli.common import exit_help, fail, install_signals
from pptpkit.control import PPTP_PORT
from pptpkit.errors import ExitStatus
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.pty import FdStream, set_raw
from pptpkit.pptp.client import (
    CallRefusedError,
    CloseInfo,
    ControlConnectionError,
    PptpClient,
    PptpClientConfig,
)
from pptpkit.vpn.connect import control_failure

__all__ = ["add_pty_parser", "main", "run_pty"]

log = logging.getLogger("pptpkit")


def add_pty_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``pty`` subcommand to ``sub`` (the subparsers of ``pptpkit``)."""
    pty: argparse.ArgumentParser = sub.add_parser(
        "pty", parents=[common], epilog=exit_help("pty"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="one call; PPP frames in async HDLC on stdin/stdout (a pppd 'pty' command)",
        description="Connect to SERVER, open one call, and exchange PPP frames in async HDLC on "
                    "stdin (read) and stdout (write), like 'pptp SERVER --nolaunchpppd'.  EOF on "
                    "stdin hangs up.  With --stdin-only (or when stdout is not writable) fd 0 "
                    "carries both directions, as pptp-linux does.",
    )
    pty.add_argument("server", type=ipv4, metavar="SERVER", help="the server's IPv4 address")
    pty.add_argument("--port", type=port, default=PPTP_PORT, help="TCP port (default 1723)")
    add_gre_options(pty, peer="the server")
    pty.add_argument("--timeout", type=positive_float, default=10.0, metavar="S",
                     help="seconds to wait for the server at each step (default 10)")
    pty.add_argument("--window", type=int_range(1, 0xFFFF), default=64, metavar="N",
                     help="packet receive window to advertise (default 64)")
    pty.add_argument("--localbind", type=ipv4, metavar="IP",
                     help="send TCP and GRE from this local address (as pptp-linux's --localbind)")
    pty.add_argument("--callmgr", action="store_true",
                     help="share a detached call manager with every other 'pptpkit pty --callmgr' "
                          "to the same server (as pptp-linux's): calls share its control connections "
                          "up to the server's Maximum Channels")
    pty.add_argument("--stdin-only", action="store_true",
                     help="read and write the frames on fd 0 (a socketpair end or raw pty)")
    pty.add_argument("--summary", action="store_true",
                     help="print one JSON line 'pptpkit-summary {...}' on stderr at the end")
    return pty


def _frame_logger(verbose: int, direction: str) -> Callable[[bytes], None] | None:
    if verbose < 2:
        return None

    def log_frame(frame: bytes) -> None:
        log.debug("%s %d bytes: %s", direction, len(frame), frame[:24].hex())

    return log_frame


def _stdout_writable() -> bool:
    """False when fd 1 is closed or read-only (pptp-linux's callers hand it one fd only)."""
    try:
        flags = fcntl.fcntl(1, fcntl.F_GETFL)
    except OSError:
        return False
    return (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)


def _plug_fd(fd: int) -> None:
    """Point a closed ``fd`` at /dev/null so nothing we open later takes its number."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


async def run_pty(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_signals(loop, stop)
    started = time.monotonic()
    config = PptpClientConfig(server=args.server, port=args.port, connect_timeout=args.timeout,
                              call_timeout=args.timeout, window=args.window, nobuffer=args.nobuffer,
                              local_address=args.localbind,
                              respect_peer_window=not args.ignore_peer_window)
    from pptpkit.compat.callmgr import ManagedClient

    client: PptpClient | ManagedClient = ManagedClient(config) if args.callmgr else PptpClient(config)
    try:
        peer = await client.connect()
    except ControlConnectionError as exc:
        failure = control_failure(exc, args.server, args.port)
        return fail("pty", failure.code, failure.message)
    try:
        call = await client.open_call()
    except CallRefusedError as exc:
        await client.close()
        return fail("pty", ExitStatus.CONNECT_FAILED,
                    f"{args.server} refused the call: {exc} (result code {exc.result_code}, "
                    f"error code {exc.error_code})")
    except ControlConnectionError as exc:
        await client.close()
        return fail("pty", ExitStatus.HANGUP,
                    f"the control connection to {args.server} ended while opening the call: {exc}")

    one_fd = args.stdin_only or not args.stdout_usable
    stream = FdStream(0, close_fds=False) if one_fd else FdStream(0, write_fd=1, close_fds=False)
    input_ended = asyncio.Event()
    saved_tty: list[Any] | None = None
    if os.isatty(0):
        with contextlib.suppress(termios.error):
            saved_tty = termios.tcgetattr(0)
            set_raw(0)
    log_in = _frame_logger(args.verbose, "to server")
    log_out = _frame_logger(args.verbose, "from server")

    def to_call(frame: bytes) -> None:
        if log_in is not None:
            log_in(frame)
        call.send_frame(frame)

    bridge = HdlcStreamBridge(stream, on_frame=to_call, on_close=lambda exc: input_ended.set())

    def from_call(frame: bytes) -> None:
        if log_out is not None:
            log_out(frame)
        bridge.send_frame(frame)

    call.on_frame = from_call
    bridge.start()
    waiters: dict[asyncio.Future[Any], str] = {
        asyncio.ensure_future(input_ended.wait()): "eof",
        asyncio.ensure_future(stop.wait()): "signal",
        asyncio.ensure_future(asyncio.shield(call.closed)): "cleared",
    }
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for fut in pending:
        fut.cancel()
    why = "cleared" if call.closed.done() else next(waiters[f] for f in done)
    code = ExitStatus.OK
    if why == "cleared":
        info: CloseInfo = call.closed.result()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stream.drain(), 1.0)
        # The engine reports the calls a closing connection takes along before the closing
        # itself, in the same batch of events, so by now both are known.
        if client.closed is not None and client.closed.done() and not client.idle_stopped:
            code = ExitStatus(fail("pty", ExitStatus.HANGUP,
                                   f"the control connection to {args.server} ended: {info.reason}"))
        else:
            code = ExitStatus(fail("pty", ExitStatus.HANGUP,
                                   f"the server cleared the call: {info.reason}"))
    else:
        log.info("%s: hanging up", "end of input" if why == "eof" else "signal")
        await call.close()
    await client.close()
    bridge.close()
    if saved_tty is not None:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(0, termios.TCSANOW, saved_tty)
    if args.summary:
        summary = {
            "server": args.server,
            "peer": asdict(peer),
            "call_id": call.call_id,
            "peer_call_id": call.peer_call_id,
            "peer_window": call.info.peer_window,
            "connect_speed": call.info.connect_speed,
            "gre": asdict(call.stats),
            "frames_from_input": bridge.stats.frames_in,
            "frames_to_output": bridge.stats.frames_out,
            "bad_fcs": bridge.hdlc_stats.bad_fcs,
            "seconds": round(time.monotonic() - started, 3),
            "exit": int(code),
        }
        print("pptpkit-summary " + json.dumps(summary), file=sys.stderr, flush=True)
    return int(code)


def main(args: argparse.Namespace) -> int:
    """``pptpkit pty``."""
    # Decided before anything opens a file descriptor: a closed fd 1 would otherwise be
    # reused by the event loop or a socket, and frames written "to stdout" would land there.
    args.stdout_usable = _stdout_writable()
    if not args.stdout_usable:
        _plug_fd(1)
    return asyncio.run(run_pty(args))
