"""Where a member finds its call manager, and how the first member starts one.

The manager listens on a unix ``SOCK_SEQPACKET`` socket ``RUN_DIR/<server>:<port>@<netns inode>``
(``RUN_DIR``: ``$PPTPKIT_RUN_DIR`` or ``/run/pptpkit``); SEQPACKET so one datagram is one PPP
frame or one message, with connection semantics (EOF = the other end is gone).  The first
member finds no manager: under an ``flock`` on ``<socket>.lock`` it starts one (``python -m
pptpkit.compat.callmgr``, its own session, no terminal) and waits until it answers.  A socket
file nobody answers on (a crashed manager) is removed under the same lock and a new manager
started: that is the recovery.  The manager takes the same lock to unlink its socket when it
exits, so a newcomer never attaches to a dying manager unnoticed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

from pptpkit.pptp.client import ControlConnectionError, PptpClientConfig

__all__ = [
    "DEFAULT_RUN_DIR",
    "ENV_LOG",
    "ENV_RUN_DIR",
    "START_TIMEOUT",
    "locked",
    "manager_argv",
    "open_member_socket",
    "run_dir",
    "socket_path",
    "try_connect",
]

log = logging.getLogger(__name__)

ENV_RUN_DIR: Final = "PPTPKIT_RUN_DIR"
#: A file the manager's stderr (its log) is appended to; unset: the log is discarded.
ENV_LOG: Final = "PPTPKIT_CALLMGR_LOG"
DEFAULT_RUN_DIR: Final = "/run/pptpkit"
#: Seconds a member waits for a manager it started to answer.
START_TIMEOUT: Final = 10.0


def run_dir(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(ENV_RUN_DIR) or DEFAULT_RUN_DIR


def _netns_id() -> str:
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        return "0"


def socket_path(server: str, port: int, directory: str | None = None, *, netns: str | None = None) -> str:
    """``DIR/SERVER:PORT@NETNS``: TCP and GRE belong to a network namespace, so processes in
    different namespaces (containers, tests) must never share a manager even with one /run."""
    return os.path.join(directory or run_dir(), f"{server}:{port}@{netns or _netns_id()}")


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def manager_argv(config: PptpClientConfig, path: str) -> list[str]:
    argv = [sys.executable, "-m", "pptpkit.compat.callmgr", "--socket", path, "--server", config.server,
            "--port", str(config.port), "--timeout", str(config.connect_timeout),
            "--window", str(config.window)]
    if config.nobuffer:
        argv.append("--nobuffer")
    if config.local_address:
        argv += ["--local-address", config.local_address]
    if not config.respect_peer_window:
        argv.append("--ignore-peer-window")
    return argv


def open_member_socket(config: PptpClientConfig, *, directory: str | None = None,
                       start_timeout: float = START_TIMEOUT) -> socket.socket:
    """Connect to the manager for ``config.server``/``config.port``, starting one if there is
    none (or only a dead one's socket).  Blocking; quick except while a manager starts."""
    directory = directory or run_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = socket_path(config.server, config.port, directory)
    sock = try_connect(path)
    if sock is not None:
        return sock
    with locked(path):
        sock = try_connect(path)  # another member may have started it meanwhile
        if sock is not None:
            return sock
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nobody answers on it: a crashed manager's leftover
        log_target = os.environ.get(ENV_LOG)
        err: Any = subprocess.DEVNULL
        log_file = None
        if log_target:
            log_file = open(log_target, "ab")  # noqa: SIM115 - handed to the child, closed below
            err = log_file
        try:
            proc = subprocess.Popen(manager_argv(config, path), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                    close_fds=True)
        finally:
            if log_file is not None:
                log_file.close()
        log.info("started call manager %d for %s:%d", proc.pid, config.server, config.port)
        deadline = time.monotonic() + start_timeout
        while True:
            sock = try_connect(path)
            if sock is not None:
                # Reaped by nobody but init once we exit; the manager is detached on purpose.
                return sock
            code = proc.poll()
            if code is not None:
                raise ControlConnectionError(f"the call manager exited with status {code} at start")
            if time.monotonic() > deadline:
                proc.kill()
                raise ControlConnectionError("the call manager did not start")
            time.sleep(0.02)

