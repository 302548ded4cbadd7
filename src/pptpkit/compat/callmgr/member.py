"""The member end: what ``pptpkit pty --callmgr`` and ``connect --pppd`` use instead of a
:class:`~pptpkit.pptp.client.PptpClient` of their own.

:class:`ManagedClient` and :class:`ManagedCall` are shaped like the part of PptpClient/PptpCall
a one-call program uses, so those programs take either without caring which.  A member holds
exactly one call: the manager, not the member, decides which control connection it travels on,
and the member learns only the call's IDs and the server's description.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from pptpkit.compat.callmgr.codec import (
    MAX_FRAME,
    MAX_QUEUED,
    Message,
    MsgType,
    decode_message,
    encode_message,
)
from pptpkit.compat.callmgr.rendezvous import open_member_socket
from pptpkit.control import Initiator, PeerInfo
from pptpkit.errors import DecodeError
from pptpkit.gre import GreStats
from pptpkit.io.grechannel import FrameInlet, FrameReceiver
from pptpkit.pptp.client import CallRefusedError, CloseInfo, ControlConnectionError, PptpClientConfig

__all__ = ["ManagedCall", "ManagedCallInfo", "ManagedClient"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManagedCallInfo:
    """What a member learns about its call (mirrors :class:`pptpkit.control.CallInfo`)."""

    call_id: int
    peer_call_id: int
    peer_window: int
    connect_speed: int


class ManagedCall(FrameReceiver):
    """A call held by the manager, used like a :class:`~pptpkit.pptp.client.PptpCall`:
    ``send_frame``, ``on_frame``, ``on_close``, ``closed`` (a future of
    :class:`~pptpkit.pptp.client.CloseInfo`), ``close()``.  ``stats`` are the manager's GRE counters
    for the call, known once it ended."""

    def __init__(self, member: ManagedClient, info: ManagedCallInfo) -> None:
        self._member = member
        self.info = info
        self.inlet: FrameInlet = FrameInlet()
        self.on_close: Callable[[CloseInfo], None] | None = None
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
                self._call.inlet.deliver(msg.frame)
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

