"""A call manager: every ``pptpkit pty`` / ``connect --pppd`` process talking to one server
shares ONE control connection, as pptp-linux's ``pptpcm`` does.

Design
------
* The **manager** is a detached process (``python -m pptpkit.compat.callmgr``, its own session, no
  terminal) owning the TCP control connection (a :class:`~pptpkit.pptp.client.PptpClient`) and the
  raw GRE socket.  It listens on a unix ``SOCK_SEQPACKET`` socket
  ``RUN_DIR/<server>:<port>@<netns inode>`` (``RUN_DIR``: ``$PPTPKIT_RUN_DIR`` or
  ``/run/pptpkit``).
* A **member** process connects to that socket, asks for a call (``OPEN``), gets ``OPENED``
  (call IDs, peer window, speed) or ``FAILED``, then exchanges PPP frames with the manager, one
  datagram per frame; ``CLOSED`` tells it the call ended.  Closing its socket hangs up.
* The first member finds no manager: under an ``flock`` on ``RUN_DIR/<server>:<port>.lock`` it
  starts one and waits until it answers.  A socket file nobody answers on (a crashed manager)
  is removed under the same lock and a new manager started: that is the recovery.  Members of
  a crashed manager see EOF and end their call (their control connection is gone anyway).
* The last call ending stops the control connection (``close_when_idle``) and the manager
  exits, unlinking its socket first (under the lock, and only if the path is still its own) so
  no newcomer attaches to a dying manager; one that raced in gets ``FAILED kind=retry`` and
  starts afresh.  A manager that never gets a call exits after :data:`IDLE_EXIT`.

GRE: the calls of one manager share its raw socket (the frames travel over the unix socket).
Every raw GRE socket receives a copy of every GRE packet in the namespace, so one socket per
member would multiply the demultiplexing work and make each member count the others' packets
as unknown calls; with the manager owning GRE, sequence/acknowledgement state lives next to
the call state it belongs to, and a member cannot keep sending on a call the manager cleared.
The price is one local datagram hop per frame.

Wire format between member and manager: one type octet, then the body.  ``FRAME`` bodies are
PPP frames (at most :data:`MAX_FRAME`); the others are a JSON object (at most
:data:`MAX_JSON` octets).  :func:`decode_message` checks everything and raises only
:class:`~pptpkit.errors.DecodeError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

from pptpkit.control import Initiator, PeerInfo
from pptpkit.errors import DecodeError, PptpkitError
from pptpkit.gre import GreStats
from pptpkit.gre.packet import MAX_PAYLOAD
from pptpkit.pptp.client import (
    CallRefusedError,
    CloseInfo,
    ControlConnectionError,
    PptpCall,
    PptpClient,
    PptpClientConfig,
)

__all__ = [
    "ENV_RUN_DIR",
    "IDLE_EXIT",
    "MAX_FRAME",
    "MAX_JSON",
    "MAX_MEMBERS",
    "CallManager",
    "ManagedCall",
    "ManagedCallInfo",
    "ManagedClient",
    "Message",
    "MsgType",
    "decode_message",
    "encode_message",
    "open_member_socket",
    "socket_path",
]

log = logging.getLogger(__name__)

ENV_RUN_DIR: Final = "PPTPKIT_RUN_DIR"
ENV_LOG: Final = "PPTPKIT_CALLMGR_LOG"
DEFAULT_RUN_DIR: Final = "/run/pptpkit"
MAX_FRAME: Final = MAX_PAYLOAD
MAX_JSON: Final = 4096
#: Members one manager serves (each holds one call); further ones are refused.
MAX_MEMBERS: Final = 256
#: Seconds a manager with no call at all stays around (its starter died before asking).
IDLE_EXIT: Final = 15.0
#: Seconds a member waits for a manager it started to answer.
START_TIMEOUT: Final = 10.0
#: Datagrams a member may have queued towards the manager before frames are dropped (the
#: frames are PPP: dropping is what a congested link does, blocking would stall the member).
MAX_QUEUED: Final = 256


class MsgType(enum.IntEnum):
    FRAME = 1
    OPEN = 2
    OPENED = 3
    FAILED = 4
    CLOSED = 5
    HANGUP = 6


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    frame: bytes = b""
    data: Mapping[str, Any] = field(default_factory=dict)


_JSON_TYPES: Final = {MsgType.OPEN, MsgType.OPENED, MsgType.FAILED, MsgType.CLOSED}
#: The fields each JSON message must carry, with their types (extra fields are ignored so a
#: newer manager can add some).
_REQUIRED: Final[dict[MsgType, dict[str, tuple[type, ...]]]] = {
    MsgType.OPEN: {},
    MsgType.OPENED: {"call_id": (int,), "peer_call_id": (int,), "peer_window": (int,),
                     "connect_speed": (int,), "peer": (dict,)},
    MsgType.FAILED: {"kind": (str,), "reason": (str,)},
    MsgType.CLOSED: {"reason": (str,), "by": (str,), "connection_lost": (bool,)},
}


def encode_message(msg: Message) -> bytes:
    if msg.type is MsgType.FRAME:
        if len(msg.frame) > MAX_FRAME:
            raise ValueError(f"frame of {len(msg.frame)} octets is over {MAX_FRAME}")
        return bytes([MsgType.FRAME]) + msg.frame
    if msg.type is MsgType.HANGUP:
        return bytes([MsgType.HANGUP])
    body = json.dumps(dict(msg.data), separators=(",", ":")).encode()
    if len(body) > MAX_JSON:
        raise ValueError("message body too long")
    return bytes([msg.type]) + body


def decode_message(data: bytes) -> Message:
    """One datagram -> :class:`Message`; :class:`DecodeError` for anything malformed."""
    if not data:
        raise DecodeError("empty message")
    try:
        kind = MsgType(data[0])
    except ValueError:
        raise DecodeError(f"unknown message type {data[0]}") from None
    body = data[1:]
    if kind is MsgType.FRAME:
        if not body or len(body) > MAX_FRAME:
            raise DecodeError(f"frame length {len(body)} not in 1..{MAX_FRAME}")
        return Message(kind, frame=bytes(body))
    if kind is MsgType.HANGUP:
        if body:
            raise DecodeError("HANGUP carries no body")
        return Message(kind)
    if len(body) > MAX_JSON:
        raise DecodeError("message body too long")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DecodeError(f"{kind.name}: body is not JSON") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{kind.name}: body is not an object")
    for name, types in _REQUIRED[kind].items():
        value = obj.get(name)
        # bool is an int subclass; a count or ID must not be True/False.
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            raise DecodeError(f"{kind.name}: field {name!r} missing or of the wrong type")
    if kind is MsgType.OPENED:
        for name in ("call_id", "peer_call_id", "peer_window"):
            if not 0 <= obj[name] <= 0xFFFF:
                raise DecodeError(f"OPENED: {name} out of range")
    return Message(kind, data=obj)


# -- where the manager lives ---------------------------------------------------------------------


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
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_connect(path: str) -> socket.socket | None:
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


def _manager_argv(config: PptpClientConfig, path: str) -> list[str]:
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
    sock = _try_connect(path)
    if sock is not None:
        return sock
    with _locked(path):
        sock = _try_connect(path)  # another member may have started it meanwhile
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
            proc = subprocess.Popen(_manager_argv(config, path), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                    close_fds=True)
        finally:
            if log_file is not None:
                log_file.close()
        log.info("started call manager %d for %s:%d", proc.pid, config.server, config.port)
        deadline = time.monotonic() + start_timeout
        while True:
            sock = _try_connect(path)
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


# -- the member side -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagedCallInfo:
    """What a member learns about its call (mirrors :class:`pptpkit.control.CallInfo`)."""

    call_id: int
    peer_call_id: int
    peer_window: int
    connect_speed: int


class ManagedCall:
    """A call held by the manager, used like a :class:`~pptpkit.pptp.client.PptpCall`:
    ``send_frame``, ``on_frame``, ``on_close``, ``closed`` (a future of
    :class:`~pptpkit.pptp.client.CloseInfo`), ``close()``.  ``stats`` are the manager's GRE counters
    for the call, known once it ended."""

    def __init__(self, member: ManagedClient, info: ManagedCallInfo) -> None:
        self._member = member
        self.info = info
        self.on_frame: Callable[[bytes], None] | None = None
        self.on_close: Callable[[CloseInfo], None] | None = None
        self.frames_unclaimed = 0
        self.stats = GreStats()
        self.closed: asyncio.Future[CloseInfo] = asyncio.get_running_loop().create_future()

    @property
    def call_id(self) -> int:
        return self.info.call_id

    @property
    def peer_call_id(self) -> int:
        return self.info.peer_call_id

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    def send_frame(self, ppp_frame: bytes) -> bool:
        if self.closed.done() or not 0 < len(ppp_frame) <= MAX_FRAME:
            return False
        return self._member._send(Message(MsgType.FRAME, frame=ppp_frame))

    def _deliver(self, frame: bytes) -> None:
        if self.on_frame is None:
            self.frames_unclaimed += 1
        else:
            self.on_frame(frame)

    def _ended(self, info: CloseInfo) -> None:
        if self.closed.done():
            return
        self.closed.set_result(info)
        if self.on_close is not None:
            self.on_close(info)

    async def close(self) -> CloseInfo:
        """Hang up and wait (briefly) for the manager's confirmation."""
        if not self.closed.done():
            self._member._send(Message(MsgType.HANGUP))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 5.0)
            if not self.closed.done():
                self._ended(CloseInfo(reason="hung up", initiated_by=Initiator.LOCAL, clean=False))
        return self.closed.result()


class ManagedClient:
    """The member end, shaped like the part of :class:`~pptpkit.pptp.client.PptpClient` a one-call
    program uses: ``await connect()`` (attach, starting the manager if needed, and get a call),
    ``await open_call()``, ``await close()``; ``closed``/``idle_stopped`` as in PptpClient.
    One call per member."""

    def __init__(self, config: PptpClientConfig, *, directory: str | None = None) -> None:
        self.config = config
        self.directory = directory
        self.peer: PeerInfo | None = None
        self.idle_stopped = False
        self.closed: asyncio.Future[CloseInfo] | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened: asyncio.Future[Message] | None = None
        self._call: ManagedCall | None = None
        self._refused: CallRefusedError | None = None
        self._queue: list[bytes] = []
        self.frames_dropped = 0

    async def connect(self) -> PeerInfo:
        """Attach to the manager (starting one if needed) and have it open our call on its
        control connection (set up by the first member).  Returns the server's PeerInfo.
        Raises :class:`ControlConnectionError` when there is no control connection; a call the
        server refuses is reported by :meth:`open_call` (:class:`CallRefusedError`), so callers
        keep PptpClient's two steps and their distinct failures."""
        for attempt in range(3):
            await self._attach()
            assert self._loop is not None
            self._opened = self._loop.create_future()
            self._send(Message(MsgType.OPEN, data={}))
            msg = await self._opened
            if msg.type is MsgType.OPENED:
                d = msg.data
                self.peer = _peer_from(d["peer"])
                self._call = ManagedCall(self, ManagedCallInfo(d["call_id"], d["peer_call_id"],
                                                               d["peer_window"], d["connect_speed"]))
                return self.peer
            kind, reason = msg.data.get("kind"), str(msg.data.get("reason", ""))
            if kind == "retry" and attempt < 2:
                # The manager was shutting down as we attached: start afresh.
                self._detach()
                continue
            if kind == "refused":
                self._refused = CallRefusedError(
                    reason, result_code=_opt_int(msg.data.get("result_code")),
                    error_code=_opt_int(msg.data.get("error_code")),
                    cause_code=_opt_int(msg.data.get("cause_code")))
                # The server answered, so the control connection itself is up; a manager that
                # did not describe the server leaves an empty description.
                peer = msg.data.get("peer")
                self.peer = _peer_from(peer) if isinstance(peer, dict) and peer else _NO_PEER
                return self.peer
            self._detach()
            raise ControlConnectionError(reason or "the call manager failed")
        raise ControlConnectionError("the call manager kept shutting down")

    async def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.closed is None or self.closed.done():
            self.closed = loop.create_future()
        sock = await loop.run_in_executor(
            None, lambda: open_member_socket(self.config, directory=self.directory))
        sock.setblocking(False)
        self._sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    async def open_call(self, *, on_frame: Callable[[bytes], None] | None = None) -> ManagedCall:
        """The call :meth:`connect` obtained.  Raises :class:`CallRefusedError` when the server
        refused it, :class:`ControlConnectionError` when there is none."""
        if self._refused is not None:
            raise self._refused
        if self._call is None:
            raise ControlConnectionError("not connected to the call manager")
        if on_frame is not None:
            self._call.on_frame = on_frame
        return self._call

    def _send(self, msg: Message) -> bool:
        sock = self._sock
        if sock is None:
            return False
        data = encode_message(msg)
        if self._queue:
            return self._enqueue(data)
        try:
            sock.send(data)
        except BlockingIOError:
            return self._enqueue(data)
        except OSError:
            return False
        return True

    def _enqueue(self, data: bytes) -> bool:
        if len(self._queue) >= MAX_QUEUED:
            self.frames_dropped += 1
            return False
        if not self._queue and self._loop is not None and self._sock is not None:
            self._loop.add_writer(self._sock.fileno(), self._writable)
        self._queue.append(data)
        return True

    def _writable(self) -> None:
        sock = self._sock
        while self._queue and sock is not None:
            try:
                sock.send(self._queue[0])
            except BlockingIOError:
                return
            except OSError:
                self._queue.clear()
                break
            self._queue.pop(0)
        if self._loop is not None and sock is not None:
            self._loop.remove_writer(sock.fileno())

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):  # bounded burst: let other readers run
            try:
                data = sock.recv(MAX_FRAME + 1)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(f"call manager socket error: {exc}")
                return
            if not data:
                self._lost("the call manager went away")
                return
            try:
                msg = decode_message(data)
            except DecodeError as exc:
                log.warning("bad message from the call manager: %s", exc)
                continue
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        if msg.type is MsgType.FRAME:
            if self._call is not None:
                self._call._deliver(msg.frame)
        elif msg.type in (MsgType.OPENED, MsgType.FAILED):
            if self._opened is not None and not self._opened.done():
                self._opened.set_result(msg)
        elif msg.type is MsgType.CLOSED:
            d = msg.data
            by = Initiator.LOCAL if d["by"] == "local" else Initiator.REMOTE
            info = CloseInfo(reason=d["reason"], initiated_by=by, clean=bool(d.get("clean", True)),
                             result_code=_opt_int(d.get("result_code")))
            if not d["connection_lost"]:
                self.idle_stopped = True
            if self._call is not None:
                stats = d.get("gre")
                if isinstance(stats, dict):
                    known = {f.name for f in fields(GreStats)}
                    with contextlib.suppress(TypeError):
                        self._call.stats = GreStats(**{k: v for k, v in stats.items()
                                                       if k in known and isinstance(v, int)})
                self._call._ended(info)
            self._finish(info)

    def _lost(self, reason: str) -> None:
        info = CloseInfo(reason=reason, initiated_by=Initiator.REMOTE, clean=False)
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(Message(MsgType.FAILED, data={"kind": "lost", "reason": reason}))
        if self._call is not None:
            self._call._ended(info)
        self._detach()
        self._finish(info)

    def _finish(self, info: CloseInfo) -> None:
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(info)

    def _detach(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            sock.close()
        self._queue.clear()

    async def close(self) -> CloseInfo | None:
        if self._call is not None and not self._call.closed.done():
            await self._call.close()
        self._detach()
        if self.closed is not None and self.closed.done():
            return self.closed.result()
        return None


_NO_PEER: Final = PeerInfo(protocol_version=0, framing_capabilities=0, bearer_capabilities=0,
                           max_channels=0, firmware_revision=0, host_name="", vendor="")


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _peer_from(d: Mapping[str, Any]) -> PeerInfo:
    known = {f.name for f in fields(PeerInfo)}
    try:
        return PeerInfo(**{k: v for k, v in d.items() if k in known})
    except TypeError:
        raise DecodeError("OPENED: peer description does not fit PeerInfo") from None


# -- the manager side ----------------------------------------------------------------------------


class _Member:
    def __init__(self, mgr: CallManager, sock: socket.socket) -> None:
        self.mgr = mgr
        self.sock = sock
        self.call: PptpCall | None = None
        self.opening = False
        self.queue: list[bytes] = []
        self.dropped = 0
        self.gone = False

    def send(self, msg: Message) -> None:
        if self.gone:
            return
        data = encode_message(msg)
        if not self.queue:
            try:
                self.sock.send(data)
                return
            except BlockingIOError:
                self.mgr.loop.add_writer(self.sock.fileno(), self.writable)
            except OSError:
                self.mgr.member_gone(self)
                return
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.queue.append(data)

    def writable(self) -> None:
        while self.queue:
            try:
                self.sock.send(self.queue[0])
            except BlockingIOError:
                return
            except OSError:
                self.mgr.member_gone(self)
                return
            self.queue.pop(0)
        self.mgr.loop.remove_writer(self.sock.fileno())


class CallManager:
    """The manager process's core: a listening unix socket plus one
    :class:`~pptpkit.pptp.client.PptpClient` whose calls belong to the members."""

    def __init__(self, config: PptpClientConfig, path: str) -> None:
        self.config = PptpClientConfig(**{**_config_dict(config), "close_when_idle": True})
        self.path = path
        self.loop = asyncio.get_running_loop()
        self.client: PptpClient | None = None
        self.members: set[_Member] = set()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.listener: socket.socket | None = None
        self._ino: int | None = None
        self._closing = False
        self._connecting: asyncio.Task[PptpClient] | None = None
        self.calls_served = 0

    def listen(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self._ino = os.stat(self.path).st_ino
        sock.listen(64)
        sock.setblocking(False)
        self.listener = sock
        self.loop.add_reader(sock.fileno(), self._accept)
        self.loop.call_later(IDLE_EXIT, self._idle_check)

    def _idle_check(self) -> None:
        if self.calls_served == 0 and not any(m.call or m.opening for m in self.members):
            log.info("no call asked for in %.0f s: exiting", IDLE_EXIT)
            self.loop.create_task(self.shutdown("idle"))

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("accept: %s", exc)
                return
            sock.setblocking(False)
            member = _Member(self, sock)
            if len(self.members) >= MAX_MEMBERS:
                member.send(Message(MsgType.FAILED, data={"kind": "busy",
                                                          "reason": "too many calls on this manager"}))
                sock.close()
                continue
            self.members.add(member)
            self.loop.add_reader(sock.fileno(), self._readable, member)

    def _readable(self, member: _Member) -> None:
        for _ in range(64):
            try:
                data = member.sock.recv(MAX_FRAME + 1)
            except BlockingIOError:
                return
            except OSError:
                self.member_gone(member)
                return
            if not data:
                self.member_gone(member)
                return
            try:
                msg = decode_message(data)
            except DecodeError as exc:
                log.warning("bad message from a member: %s", exc)
                continue
            if msg.type is MsgType.FRAME:
                if member.call is not None:
                    member.call.send_frame(msg.frame)
            elif msg.type is MsgType.OPEN:
                if member.call is None and not member.opening:
                    member.opening = True
                    self.loop.create_task(self._open(member))
            elif msg.type is MsgType.HANGUP:
                self.member_gone(member)
                return

    async def _open(self, member: _Member) -> None:
        if self._closing:
            member.send(Message(MsgType.FAILED, data={"kind": "retry", "reason": "manager exiting"}))
            return
        try:
            client = await self._client()
            call = await client.open_call()
        except CallRefusedError as exc:
            member.opening = False
            peer = asdict(self.client.peer) if self.client and self.client.peer else None
            member.send(Message(MsgType.FAILED, data={
                "kind": "refused", "reason": str(exc), "result_code": exc.result_code,
                "error_code": exc.error_code, "cause_code": exc.cause_code, "peer": peer}))
            self._maybe_exit()
            return
        except ControlConnectionError as exc:
            member.opening = False
            kind = "retry" if self._closing else "connect"
            member.send(Message(MsgType.FAILED, data={"kind": kind, "reason": str(exc)}))
            self._maybe_exit()
            return
        member.opening = False
        if member.gone:
            await call.close()
            return
        self.calls_served += 1
        member.call = call
        call.on_frame = lambda frame: member.send(Message(MsgType.FRAME, frame=frame))
        call.on_close = lambda info: self._call_ended(member, call, info)
        peer = asdict(client.peer) if client.peer is not None else {}
        member.send(Message(MsgType.OPENED, data={
            "call_id": call.call_id, "peer_call_id": call.peer_call_id,
            "peer_window": call.info.peer_window or 0, "connect_speed": call.info.connect_speed or 0,
            "peer": peer}))

    async def _client(self) -> PptpClient:
        """The one control connection, set up by the first OPEN; members asking meanwhile
        wait for the same set-up instead of starting a second connection."""
        if self._connecting is None:
            self._connecting = self.loop.create_task(self._connect())
        client = await asyncio.shield(self._connecting)
        if client.closed is None or client.closed.done():
            # The connection ended (idle or lost): never reused, we are on our way out.
            raise ControlConnectionError("the control connection is closing")
        return client

    async def _connect(self) -> PptpClient:
        client = PptpClient(self.config)
        self.client = client
        await client.connect()
        assert client.closed is not None
        client.closed.add_done_callback(lambda fut: self._connection_closed(client))
        return client

    def _call_ended(self, member: _Member, call: PptpCall, info: CloseInfo) -> None:
        # A closing connection ends its calls before it reports its own end, in the same batch
        # of events: decide "connection lost or call cleared" once the batch is through.
        self.loop.call_soon(self._report_end, member, call, info)

    def _report_end(self, member: _Member, call: PptpCall, info: CloseInfo) -> None:
        client = self.client
        lost = client is not None and client.closed is not None and client.closed.done() \
            and not client.idle_stopped
        member.send(Message(MsgType.CLOSED, data={
            "reason": info.reason, "by": "local" if info.initiated_by is Initiator.LOCAL else "remote",
            "clean": info.clean, "result_code": info.result_code, "connection_lost": lost,
            "gre": asdict(call.stats)}))
        member.call = None

    def member_gone(self, member: _Member) -> None:
        if member.gone:
            return
        member.gone = True
        self.members.discard(member)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(member.sock.fileno())
            self.loop.remove_writer(member.sock.fileno())
        member.sock.close()
        call, member.call = member.call, None
        if call is not None and not call.closed.done():
            self.loop.create_task(call.close())
        self._maybe_exit()

    def _connection_closed(self, client: PptpClient) -> None:
        log.info("control connection closed%s", " (idle)" if client.idle_stopped else "")
        self.loop.create_task(self.shutdown("control connection closed"))

    def _maybe_exit(self) -> None:
        if self.members or self._closing:
            return
        client = self.client
        if client is None or client.closed is None or client.closed.done():
            self.loop.create_task(self.shutdown("no members left"))
        # Otherwise the last call's clearing stops the connection (close_when_idle) and
        # _connection_closed shuts us down.

    def _unlink(self) -> None:
        if self._ino is None:
            return
        try:
            with _locked(self.path), contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == self._ino:
                    os.unlink(self.path)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path, exc)
        self._ino = None

    async def shutdown(self, why: str) -> None:
        if self._closing:
            return
        self._closing = True
        log.info("call manager exiting: %s", why)
        # First make sure nobody new finds us, then let everybody go.
        self._unlink()
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for member in list(self.members):
            if member.call is None and member.opening is False:
                member.send(Message(MsgType.FAILED, data={"kind": "retry", "reason": why}))
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        for member in list(self.members):
            # Calls ended with the connection; flush what is queued, then close.
            member.writable()
            self.member_gone(member)
        if not self.done.done():
            self.done.set_result(None)


def _config_dict(config: PptpClientConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(PptpClientConfig)}


async def _run_manager(config: PptpClientConfig, path: str) -> int:
    mgr = CallManager(config, path)
    try:
        mgr.listen()
    except OSError as exc:
        log.error("cannot listen on %s: %s", path, exc)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            mgr.loop.add_signal_handler(sig, lambda: mgr.loop.create_task(mgr.shutdown("signal")))
    await mgr.done
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pptpkit.compat.callmgr",
                                description="pptpkit's call manager (started by pptpkit pty / connect)")
    p.add_argument("--socket", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--port", type=int, default=1723)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--nobuffer", action="store_true")
    p.add_argument("--local-address")
    p.add_argument("--ignore-peer-window", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="pptpkit-callmgr[%(process)d]: %(message)s")
    try:
        config = PptpClientConfig(server=args.server, port=args.port, connect_timeout=args.timeout,
                                  call_timeout=args.timeout, window=args.window, nobuffer=args.nobuffer,
                                  local_address=args.local_address,
                                  respect_peer_window=not args.ignore_peer_window)
    except PptpkitError as exc:
        log.error("%s", exc)
        return 2
    try:
        return asyncio.run(_run_manager(config, args.socket))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            log.error("%s (raw GRE sockets need root or CAP_NET_RAW)", exc)
        else:
            log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
