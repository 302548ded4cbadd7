"""``pptpkit ctl``: ask a running ``pptpkit server`` through its control socket.

One request, one answer, over the JSON-lines protocol of :mod:`pptpkit.ops.ctl`.  The
request is built and the answer formatted by pure functions (:func:`build_request`,
:func:`format_answer`), so what an operator reads is tested without a server; the socket part
is a few blocking calls, because a command that sends one line needs no event loop.

Output: aligned tables and ``key: value`` lines for people, the server's answer as one JSON
object with ``--json`` for scripts.  Failures are one line and a status from the common table:
no server on the socket :attr:`~pptpkit.errors.ExitStatus.CTL_UNREACHABLE`, an unknown session
:attr:`~pptpkit.errors.ExitStatus.NO_SUCH_SESSION`, a socket we may not use
:attr:`~pptpkit.errors.ExitStatus.NOT_PERMITTED`, a refusal (reload failed, not in this mode)
:attr:`~pptpkit.errors.ExitStatus.FATAL`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any, Final

from pptpkit.cli.common import exit_help, fail
from pptpkit.errors import ExitStatus
from pptpkit.vpn.paths import DEFAULT_CTL_SOCKET

__all__ = ["add_ctl_parser", "build_request", "format_answer", "run_ctl_command", "status_of"]

#: Seconds to wait for the server's answer (a kill or reload answers at once).
ANSWER_TIMEOUT: Final = 10.0
#: The longest answer line we read (thousands of sessions fit).
MAX_ANSWER: Final = 64 * 1024 * 1024

_KIND_STATUS: Final = {
    "no-such-session": ExitStatus.NO_SUCH_SESSION,
    "not-permitted": ExitStatus.NOT_PERMITTED,
    "bad-request": ExitStatus.USAGE,
}


def add_ctl_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "ctl", parents=[common], help="list, show and kill sessions of a running server; reload; counters",
        description="Talk to a running 'pptpkit server' through its control socket (root or the "
                    "server's user only).",
        epilog=exit_help("ctl"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", default=DEFAULT_CTL_SOCKET, metavar="PATH",
                   help=f"the server's control socket (default {DEFAULT_CTL_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the server's answer as one JSON object")
    cmds = p.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")
    cmds.add_parser("sessions", help="every session: user, addresses, uptime, traffic, GRE loss and RTT")
    show = cmds.add_parser("show", help="one session in full")
    show.add_argument("id", metavar="ID")
    kill = cmds.add_parser("kill", help="end sessions (LCP Terminate, Call-Clear, cause Admin-Reset)")
    which = kill.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="the session's id")
    which.add_argument("--user", metavar="USER", help="every session of USER")
    which.add_argument("--ip", metavar="ADDRESS", help="every session with this tunnel or client address")
    cmds.add_parser("reload", help="re-read the secrets file (as SIGHUP); sessions stay")
    cmds.add_parser("stats", help="the server's counters")
    return p


def build_request(args: argparse.Namespace) -> dict[str, str]:
    """The request object for the parsed command line."""
    cmd: str = args.ctl_command
    request = {"cmd": cmd}
    if cmd == "show":
        request["id"] = args.id
    elif cmd == "kill":
        for key in ("id", "user", "ip"):
            if getattr(args, key, None):
                request[key] = getattr(args, key)
    return request


def status_of(response: dict[str, Any]) -> ExitStatus:
    if response.get("ok") is True:
        return ExitStatus.OK
    return _KIND_STATUS.get(str(response.get("kind")), ExitStatus.FATAL)


def _size(n: object) -> str:
    if not isinstance(n, int):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _gre_cells(record: dict[str, Any]) -> list[str]:
    gre = record.get("gre") or {}
    rtt = gre.get("rtt_ms")
    return [_text(gre.get("lost")), _text(gre.get("reordered")), "-" if rtt is None else f"{rtt:g}ms"]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell (the last one is not padded)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


def _sessions_table(mode: str, sessions: list[dict[str, Any]]) -> list[str]:
    if not sessions:
        return ["no sessions" if mode == "builtin" else "no calls"]
    if mode == "program":
        return table(["ID", "PEER", "PEER-CALL", "PID", "ADDRESS", "UPTIME", "LOST", "REORD", "RTT"],
                     [[_text(s.get("id")), f"{s.get('peer')}:{s.get('peer_port')}",
                       _text(s.get("peer_call_id")), _text(s.get("pid")), _text(s.get("address")),
                       _duration(s.get("uptime")), *_gre_cells(s)] for s in sessions])
    return table(["ID", "USER", "PEER", "ADDRESS", "IFACE", "STATE", "UPTIME", "IN", "OUT", "MPPE",
                  "LOST", "REORD", "RTT"],
                 [[_text(s.get("id")), _text(s.get("user")), f"{s.get('peer')}:{s.get('peer_port')}",
                   _text(s.get("address")), _text(s.get("interface")), _text(s.get("state")),
                   _duration(s.get("uptime")), _size(s.get("bytes_in")), _size(s.get("bytes_out")),
                   _text(s.get("mppe")), *_gre_cells(s)] for s in sessions])


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in obj.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", _text(value)))
    return out


def _key_values(obj: dict[str, Any]) -> list[str]:
    pairs = _flatten(obj)
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return [f"{(k + ':').ljust(width)} {v}" for k, v in pairs]


def format_answer(cmd: str, response: dict[str, Any]) -> list[str]:
    """What a successful answer prints, one string per line."""
    if cmd == "sessions":
        return _sessions_table(str(response.get("mode")), list(response.get("sessions") or []))
    if cmd == "show":
        return _key_values(dict(response.get("session") or {}))
    if cmd == "kill":
        return [f"killed {' '.join(str(i) for i in response.get('killed') or [])}"]
    if cmd == "reload":
        return ["secrets reloaded"]
    return _key_values(dict(response.get("stats") or {}))


def ask(path: str, request: dict[str, str], timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """Send one request, read one answer.  ``OSError`` from the socket; ``ValueError`` for an
    answer that is not one JSON object."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_ANSWER:
                raise ValueError(f"an answer longer than {MAX_ANSWER} bytes")
    if not data:
        raise ValueError("the server closed the connection without an answer")
    answer = json.loads(bytes(data))
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    return answer


def run_ctl_command(args: argparse.Namespace) -> int:
    path: str = args.socket
    request = build_request(args)
    try:
        response = ask(path, request)
    except (FileNotFoundError, ConnectionRefusedError):
        return fail("ctl", ExitStatus.CTL_UNREACHABLE,
                    f"no server on the control socket {path} (not running, or started with --no-ctl "
                    "or another --ctl-socket)")
    except PermissionError as exc:
        return fail("ctl", ExitStatus.NOT_PERMITTED,
                    f"not permitted: {path}: {exc.strerror} (root and the server's user only)")
    except TimeoutError:
        return fail("ctl", ExitStatus.FATAL, f"no answer on the control socket {path} "
                                             f"within {ANSWER_TIMEOUT:g} s")
    except (OSError, ValueError) as exc:
        return fail("ctl", ExitStatus.FATAL, f"control socket {path}: {exc}")
    status = status_of(response)
    if args.json:
        print(json.dumps(response), flush=True)
    if status is not ExitStatus.OK:
        message = str(response.get("error") or "refused")
        if status is ExitStatus.NOT_PERMITTED and not message.startswith("not permitted"):
            message = f"not permitted: {message}"
        return fail("ctl", status, message)
    if not args.json:
        sys.stdout.write("".join(line + "\n" for line in format_answer(request["cmd"], response)))
        sys.stdout.flush()
    return ExitStatus.OK
