"""What every command shares: its exit-status table, its one-line failure messages, logging
and signal set-up.

The numbers are :class:`pptpkit.errors.ExitStatus`, one table for the whole program;
:data:`COMMAND_EXITS` says which of them each command can return, and the help epilogs and
docs/cli.md are written from it, so the documented table cannot drift from the code.  A failure
is reported as ONE line ``pptpkit COMMAND: message`` on stderr by :func:`fail`, and the same
failure is worded the same in every command (:func:`not_permitted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
from typing import Final

from pptpkit.errors import NOT_PERMITTED_MESSAGE, ConfigError, ExitStatus

__all__ = [
    "COMMAND_EXITS",
    "EXIT_MEANING",
    "NOISY_LOGGERS",
    "exit_help",
    "fail",
    "install_signals",
    "not_permitted",
    "setup_logging",
]

S = ExitStatus

#: What each status means, in words that fit every command that uses it.
EXIT_MEANING: Final[dict[ExitStatus, str]] = {
    S.OK: "success; also after a clean shutdown on SIGINT/SIGTERM/SIGHUP or EOF on the PPP input",
    S.FATAL: "run-time error (cannot listen, TUN device, netlink, resolv.conf, a check failed ...)",
    S.USAGE: "bad command line, config file, options file or password source",
    S.NOT_PERMITTED: "not permitted: needs root (CAP_NET_ADMIN and CAP_NET_RAW)",
    S.USER_REQUEST: "terminated by SIGINT/SIGTERM/SIGHUP (pppd's status; the other commands exit 0)",
    S.CONNECT_FAILED: "the server answered but refused the control connection or the call",
    S.NEGOTIATION_FAILED: "PPP negotiation failed, MPPE required by one side and refused by the "
                          "other included",
    S.PEER_AUTH_FAILED: "the peer failed to authenticate (only if it was asked to)",
    S.IDLE_TIMEOUT: "idle timeout",
    S.PEER_DEAD: "the peer stopped answering LCP echo requests",
    S.HANGUP: "hang-up: the call was cleared or the control connection closed by the other side",
    S.LOOPBACK: "loopback detected (our own LCP magic number came back)",
    S.AUTH_FAILED: "our authentication to the peer failed (wrong user name or password)",
    S.CONTROL_UNREACHABLE: "the control connection could not be opened (TCP 1723 refused, "
                           "unreachable, timed out)",
    S.GRE_BLOCKED: "GRE (IP protocol 47) blocked one way or both: TCP 1723 works, GRE does not",
    S.ROUTE_LOOP: "a route through the tunnel would carry the tunnel itself (refused, nothing "
                  "changed)",
    S.CTL_UNREACHABLE: "no server answers on the control socket (not running, or --no-ctl)",
    S.NO_SUCH_SESSION: "no such session (id, user or address)",
}

_LINK: Final = (S.NEGOTIATION_FAILED, S.PEER_AUTH_FAILED, S.IDLE_TIMEOUT, S.PEER_DEAD, S.HANGUP,
                S.LOOPBACK, S.AUTH_FAILED)

#: The statuses each command can exit with.  ``demo`` also exits 130 on Ctrl-C (128 + SIGINT).
COMMAND_EXITS: Final[dict[str, tuple[ExitStatus, ...]]] = {
    "pty": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED, S.CONNECT_FAILED, S.HANGUP,
            S.CONTROL_UNREACHABLE),
    "server": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED),
    "connect": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED, S.CONNECT_FAILED, *_LINK,
                S.CONTROL_UNREACHABLE, S.GRE_BLOCKED, S.ROUTE_LOOP),
    "ppp": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED, S.USER_REQUEST, *_LINK),
    "demo": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED),
    "bench": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED),
    "ctl": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED, S.CTL_UNREACHABLE, S.NO_SUCH_SESSION),
    # 1: a check failed (big packets through the tunnel lost).
    "probe": (S.OK, S.FATAL, S.USAGE, S.NOT_PERMITTED, S.CONNECT_FAILED, *_LINK,
              S.CONTROL_UNREACHABLE, S.GRE_BLOCKED),
}


def exit_help(command: str, *, extra: str = "") -> str:
    """The ``exit status:`` epilog of ``command``'s help."""
    lines = ["exit status (pppd's numbers where pppd has the same case):"]
    lines += [f"  {int(s):2d}  {EXIT_MEANING[s]}" for s in COMMAND_EXITS[command]]
    return "\n".join(lines) + "\n" + extra


def fail(command: str, status: ExitStatus, message: str) -> int:
    """Print the one line ``pptpkit COMMAND: message`` on stderr; returns ``status``."""
    print(f"pptpkit {command}: {message}", file=sys.stderr, flush=True)
    return int(status)


def not_permitted(command: str, exc: BaseException | str) -> int:
    """The kernel refused a privileged operation: the same line and status in every command."""
    return fail(command, S.NOT_PERMITTED, f"{NOT_PERMITTED_MESSAGE}: {exc}")


_STAMP: Final = "%(asctime)s.%(msecs)03d "


def _log_handler(target: str | None, verbose: int) -> logging.Handler:
    detail = "%(levelname)s %(name)s: " if verbose else ""
    if target in (None, "stderr"):
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        # journald (JOURNAL_STREAM names our stderr) stamps every line itself.
        stamp = "" if _stderr_is_journal() else _STAMP
        handler.setFormatter(logging.Formatter(f"{stamp}pptpkit[%(process)d]: {detail}%(message)s",
                                               datefmt="%Y-%m-%dT%H:%M:%S"))
        return handler
    if target == "syslog":
        try:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        except OSError as exc:
            raise ConfigError(f"--log syslog: cannot reach /dev/log: {exc.strerror or exc}") from None
        handler.setFormatter(logging.Formatter(f"pptpkit[%(process)d]: {detail}%(message)s"))
        return handler
    if target == "journal":
        try:
            from systemd import journal  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError("--log journal needs the python3-systemd package; use --log syslog or "
                              "stderr (journald stamps a service's stderr itself)") from None
        handler = journal.JournalHandler(SYSLOG_IDENTIFIER="pptpkit")
        handler.setFormatter(logging.Formatter(f"{detail}%(message)s"))
        return handler
    return _file_handler(target, verbose, "--log")


def _file_handler(path: str, verbose: int, what: str) -> logging.Handler:
    detail = "%(levelname)s %(name)s: " if verbose else ""
    try:
        # Reopened when logrotate moves the file away.
        handler = logging.handlers.WatchedFileHandler(path)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter(f"{_STAMP}pptpkit[%(process)d]: {detail}%(message)s",
                                           datefmt="%Y-%m-%dT%H:%M:%S"))
    return handler


def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream != "" and f"{st.st_dev}" == device and f"{st.st_ino}" == inode


#: Third-party libraries whose own debugging (netlink dumps, event-loop internals, RADIUS
#: packet dumps, metrics) is not shown below -vvv.
NOISY_LOGGERS: Final = ("asyncio", "pyroute2", "pyrad", "prometheus_client")


def setup_logging(verbose: int, quiet: bool, target: str | None = None, *,
                  copy: str | None = None) -> None:
    """The log: stderr by default (stdout may carry PPP frames), with timestamps unless journald
    adds its own; ``target`` syslog, journal or a file instead; ``copy``: a file that gets
    every line too (pppd's ``logfile``).  One line per session event by default, ``-v``
    protocol debugging, ``-vv`` also one line per PPP frame, ``-vvv`` the libraries' own
    debugging too (:data:`NOISY_LOGGERS` stay at WARNING below that).  :class:`ConfigError`
    when the target cannot be used."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handlers = [_log_handler(target, verbose)]
    if copy is not None and copy != target:
        handlers.append(_file_handler(copy, verbose, "logfile"))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    for noisy in NOISY_LOGGERS:
        # -v is about the protocol: the libraries' own debug chatter drowns it.  NOTSET at -vvv
        # hands the choice back to the root logger (DEBUG).
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 3 else logging.NOTSET)


def install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGINT, SIGTERM and SIGHUP set ``stop``: every command shuts down cleanly on them."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
