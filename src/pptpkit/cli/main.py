"""The ``pptpkit`` command: ``pty`` (client), ``server``, ``demo``.

Logging goes to stderr (stdout may carry PPP frames): one line per session event by default,
``-v`` adds protocol debugging, ``-vv`` also one line per PPP frame.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import signal
import sys
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Final

from pptpkit.cli.argtypes import add_gre_options, int_range
from pptpkit.control import PPTP_PORT
from pptpkit.errors import ConfigError, PptpkitError
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.pty import FdStream, set_raw
from pptpkit.pptp.client import (
    CallRefusedError,
    CloseInfo,
    ControlConnectionError,
    PptpClient,
    PptpClientConfig,
)
from pptpkit.pptp.server import (
    AddressPool,
    PppProgramConfig,
    PptpServer,
    PptpServerConfig,
    parse_ip_list,
    ppp_program_factory,
)

__all__ = [
    "EXIT_CALL_CLEARED",
    "EXIT_CALL_REFUSED",
    "EXIT_CONNECTION_LOST",
    "EXIT_CONNECT_FAILED",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "parse_listen",
]

log = logging.getLogger("pptpkit")

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECT_FAILED: Final = 3
EXIT_CALL_REFUSED: Final = 4
EXIT_CALL_CLEARED: Final = 5
EXIT_CONNECTION_LOST: Final = 6

EXIT_CODES_HELP: Final = """\
exit status:
  0  success; also after a clean shutdown on SIGINT/SIGTERM or EOF on the PPP input
  1  run-time error (cannot listen, no raw GRE socket: needs root/CAP_NET_RAW, ...)
  2  bad command line
  3  (pty) the control connection could not be set up (refused, timeout, rejected)
  4  (pty) the server refused the call (its result code is printed)
  5  (pty) the server cleared the call
  6  (pty) the control connection was lost or stopped by the server during the call
"""


class _Usage(Exception):
    """A command-line value that parses but makes no sense; printed as a usage error."""


# -- argument types ------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str | None, int]:
    """``ADDR``, ``ADDR:PORT`` or ``:PORT`` (IPv4); ADDR ``0.0.0.0``/``*``/empty means all."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    host = host.strip()
    port = PPTP_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 0xFFFF:
            raise argparse.ArgumentTypeError(f"bad port {port_text!r} in {text!r} (1..65535)")
        port = int(port_text)
    if host in ("", "*", "0.0.0.0"):
        return None, port
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IPv4 address (in {text!r})") from None
    return host, port


def _ip_list(text: str) -> list[str]:
    try:
        return parse_ip_list(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _port(text: str) -> int:
    return int_range(1, 0xFFFF)(text)


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


# -- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: protocol debugging; -vv: also one line per PPP frame")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    parser = argparse.ArgumentParser(
        prog="pptpkit", description="PPTP client and server (RFC 2637) in Python.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pty = sub.add_parser(
        "pty", parents=[common], epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="one call; PPP frames in async HDLC on stdin/stdout (a pppd 'pty' command)",
        description="Connect to SERVER, open one call, and exchange PPP frames in async HDLC on "
                    "stdin (read) and stdout (write), like 'pptp SERVER --nolaunchpppd'.  EOF on "
                    "stdin hangs up.  With --stdin-only (or when stdout is not writable) fd 0 "
                    "carries both directions, as pptp-linux does.",
    )
    pty.add_argument("server", type=_ipv4, metavar="SERVER", help="the server's IPv4 address")
    pty.add_argument("--port", type=_port, default=PPTP_PORT, help="TCP port (default 1723)")
    add_gre_options(pty, peer="the server")
    pty.add_argument("--timeout", type=_positive_float, default=10.0, metavar="S",
                     help="seconds to wait for the server at each step (default 10)")
    pty.add_argument("--window", type=int_range(1, 0xFFFF), default=64, metavar="N",
                     help="packet receive window to advertise (default 64)")
    pty.add_argument("--localbind", type=_ipv4, metavar="IP",
                     help="send TCP and GRE from this local address (as pptp-linux's --localbind)")
    pty.add_argument("--callmgr", action="store_true",
                     help="share one control connection with every other 'pptpkit pty --callmgr' "
                          "to the same server (a detached call manager, as pptp-linux's)")
    pty.add_argument("--stdin-only", action="store_true",
                     help="read and write the frames on fd 0 (a socketpair end or raw pty)")
    pty.add_argument("--summary", action="store_true",
                     help="print one JSON line 'pptpkit-summary {...}' on stderr at the end")

    from pptpkit.cli.server import BUILTIN_HELP, add_builtin_arguments

    srv = sub.add_parser(
        "server", parents=[common], epilog=BUILTIN_HELP + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="PPTP server with the built-in PPP stack on TUN, or a PPP program per call (as pptpd)",
        description="Accept PPTP connections.  Without --ppp-program every call runs our own PPP "
                    "stack and IP goes over TUN interfaces (built-in mode).  With it, the program "
                    "is started for every call on a raw pty with pptpd's argument list: PROGRAM "
                    "local [file OPTFILE] SPEED [LOCAL:REMOTE] [ipparam CLIENT] remotenumber CLIENT.",
    )
    srv.add_argument("--ppp-program", metavar="PATH",
                     help="program to run per call instead of the built-in PPP stack (pppd)")
    srv.add_argument("--ppp-arg", action="append", default=[], metavar="ARG",
                     help="extra argument placed right after PATH (repeatable; use --ppp-arg=-m)")
    srv.add_argument("--option", metavar="FILE", help="pass 'file FILE' to the program (pptpd's option)")
    srv.add_argument("--localip", type=_ip_list, metavar="LIST",
                     help="local address(es) for the calls, pptpd syntax (198.51.100.1 or a list)")
    srv.add_argument("--remoteip", type=_ip_list, metavar="LIST",
                     help="client address pool, pptpd syntax: 198.51.100.10-50,198.51.100.60")
    srv.add_argument("--speed", type=int_range(1, 0xFFFFFFFF), default=115200, metavar="BPS",
                     help="speed argument for the program (default 115200)")
    srv.add_argument("--noipparam", action="store_true", help="do not pass 'ipparam CLIENT'")
    srv.add_argument("--delegate", action="store_true",
                     help="pass no LOCAL:REMOTE pair (the program allocates addresses)")
    srv.add_argument("--listen", type=parse_listen, default=(None, PPTP_PORT), metavar="ADDR[:PORT]",
                     help="address and port to listen on (default all addresses, port 1723)")
    srv.add_argument("--connections", type=int_range(1, 65535), default=100, metavar="N",
                     help="maximum simultaneous control connections (default 100)")
    srv.add_argument("--max-per-source", type=int_range(1, 65535), default=16, metavar="N",
                     help="maximum control connections from one address (default 16)")
    srv.add_argument("--stimeout", type=_positive_float, default=10.0, metavar="S",
                     help="seconds a client may take to start the control connection (default 10)")
    srv.add_argument("--window", type=int_range(1, 0xFFFF), default=64, metavar="N",
                     help="packet receive window to advertise (default 64)")
    add_gre_options(srv, peer="each client")

    add_builtin_arguments(srv)

    demo = sub.add_parser(
        "demo", parents=[common], help="a whole VPN between two fresh network namespaces",
        description="Two network namespaces joined by a veth pair (TEST-NET addresses): 'pptpkit "
                    "server' (built-in PPP, MS-CHAPv2 + MPPE-128 required) in one, 'pptpkit connect' "
                    "in the other.  Prints what was negotiated, a ping and a TCP throughput figure "
                    "through the tunnel, then removes everything.  Needs root.",
    )
    demo.add_argument("--pings", type=int_range(1, 100), default=5, metavar="N",
                      help="pings across the tunnel (default 5)")
    demo.add_argument("--seconds", type=_positive_float, default=3.0, metavar="S",
                      help="seconds of TCP for the throughput figure (default 3)")
    from pptpkit.cli.connect import add_connect_parser

    add_connect_parser(sub, common)
    from pptpkit.cli.ppp import add_ppp_parser

    add_ppp_parser(sub, common)
    from pptpkit.cli.bench import add_bench_parser

    add_bench_parser(sub, common)
    return parser


def _server_program_config(args: argparse.Namespace) -> PppProgramConfig:
    local, remote = args.localip, args.remoteip
    pool: AddressPool | None = None
    if args.delegate:
        if local or remote:
            raise _Usage("--delegate passes no addresses: drop --localip/--remoteip")
    elif local is None and remote is None:
        raise _Usage("give --localip and --remoteip, or --delegate")
    elif local is None or remote is None:
        raise _Usage(f"--{'localip' if local is None else 'remoteip'} is missing")
    else:
        pool = AddressPool(local, remote)
    return PppProgramConfig(program=args.ppp_program, program_args=tuple(args.ppp_arg),
                            option_file=args.option, pool=pool, speed=str(args.speed),
                            noipparam=args.noipparam, delegate=args.delegate)


# -- logging -------------------------------------------------------------------------------------


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pptpkit[%(process)d]: %(levelname)s %(name)s: %(message)s"
                                           if verbose else "pptpkit[%(process)d]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbose < 2:
        # Per-frame lines only at -vv; asyncio's own debug chatter never helps here.
        logging.getLogger("asyncio").setLevel(logging.WARNING)


def _frame_logger(verbose: int, direction: str) -> Callable[[bytes], None] | None:
    if verbose < 2:
        return None

    def log_frame(frame: bytes) -> None:
        log.debug("%s %d bytes: %s", direction, len(frame), frame[:24].hex())

    return log_frame


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


# -- pty -----------------------------------------------------------------------------------------


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
    _install_signals(loop, stop)
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
        print(f"pptpkit: control connection to {args.server}:{args.port} failed: {exc}", file=sys.stderr)
        return EXIT_CONNECT_FAILED
    try:
        call = await client.open_call()
    except CallRefusedError as exc:
        print(f"pptpkit: the server refused the call: {exc} (result code {exc.result_code}, "
              f"error code {exc.error_code})", file=sys.stderr)
        await client.close()
        return EXIT_CALL_REFUSED
    except ControlConnectionError as exc:
        print(f"pptpkit: control connection lost while opening the call: {exc}", file=sys.stderr)
        await client.close()
        return EXIT_CONNECTION_LOST

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
    code = EXIT_OK
    if why == "cleared":
        info: CloseInfo = call.closed.result()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stream.drain(), 1.0)
        # The engine reports the calls a closing connection takes along before the closing
        # itself, in the same batch of events, so by now both are known.
        if client.closed is not None and client.closed.done() and not client.idle_stopped:
            code = EXIT_CONNECTION_LOST
            print(f"pptpkit: control connection to {args.server} ended: {info.reason}", file=sys.stderr)
        else:
            code = EXIT_CALL_CLEARED
            print(f"pptpkit: the server cleared the call: {info.reason}", file=sys.stderr)
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
            "exit": code,
        }
        print("pptpkit-summary " + json.dumps(summary), file=sys.stderr, flush=True)
    return code


# -- server --------------------------------------------------------------------------------------


async def run_server(args: argparse.Namespace, program: PppProgramConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _install_signals(loop, stop)
    host, port = args.listen
    config = PptpServerConfig(listen=host, port=port, max_connections=args.connections,
                              max_per_source=args.max_per_source, start_timeout=args.stimeout,
                              window=args.window, nobuffer=args.nobuffer,
                              respect_peer_window=not args.ignore_peer_window)
    server = PptpServer(config, ppp_program_factory(program))
    try:
        await server.start()
    except OSError as exc:
        print(f"pptpkit: cannot start the server on {host or '*'}:{port}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    await stop.wait()
    log.info("shutting down: %d connections, %d calls", server.connections, len(server.calls))
    await server.close()
    log.info("stopped")
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["ppp"]:
        # pppd's options (-pap, +ipv6 ...) are not argparse's: hand them over untouched.
        from pptpkit.cli.ppp import main as ppp_main

        return ppp_main(words[1:])
    if words[:1] == ["connect"] and "--pppd" in words:
        # pptp-linux style: the options after --pppd are pppd's, and pppd's own options say
        # who we are, so connect's -u/--user does not apply.
        from pptpkit.compat.pppd_launch import main as pppd_main

        return pppd_main(words[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        if args.command == "pty":
            # Decided before anything opens a file descriptor: a closed fd 1 would otherwise be
            # reused by the event loop or a socket, and frames written "to stdout" would land there.
            args.stdout_usable = _stdout_writable()
            if not args.stdout_usable:
                _plug_fd(1)
            return asyncio.run(run_pty(args))
        if args.command == "server" and args.config:
            from pptpkit.compat.pptpdconf import apply_to_server_args

            apply_to_server_args(args)
        if args.command == "server" and args.ppp_program is None:
            from pptpkit.cli.server import run_builtin

            return asyncio.run(run_builtin(args))
        if args.command == "server":
            try:
                program = _server_program_config(args)
            except (_Usage, ConfigError) as exc:
                parser.error(f"server: {exc}")
            return asyncio.run(run_server(args, program))
        if args.command == "connect":
            from pptpkit.cli.connect import run_connect_command

            return run_connect_command(args)
        if args.command == "bench":
            from pptpkit.cli.bench import run_bench_command

            return run_bench_command(args, argv)
        if args.command == "demo":
            from pptpkit.lab.demo import run_demo

            return run_demo(pings=args.pings, seconds=min(args.seconds, 60.0), verbose=args.verbose)
    except KeyboardInterrupt:
        return EXIT_OK
    except PptpkitError as exc:
        print(f"pptpkit: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PermissionError as exc:
        print(f"pptpkit: {exc} (raw GRE sockets need root or CAP_NET_RAW)", file=sys.stderr)
        return EXIT_ERROR
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE  # not reached: error() exits

