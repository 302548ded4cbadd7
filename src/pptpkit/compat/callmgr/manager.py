"""The call manager process: every member's call, on as few control connections as the server
allows, all owned by this one process.

The manager is a detached process (``python -m pptpkit.compat.callmgr``, started by the first
member, see :mod:`~pptpkit.compat.callmgr.rendezvous`) listening on a unix socket.  Each member
connection asks for one call (``OPEN``), gets ``OPENED`` or ``FAILED``, then exchanges PPP frames
with the manager, one datagram per frame; ``CLOSED`` tells it the call ended, closing its socket
hangs up.

Control connections: a :class:`~pptpkit.compat.callmgr.pool.ConnectionPool` decides which
connection a call goes on, honouring each connection's Maximum Channels (pptpd allows one call per
connection, ``pptpkit server`` many); the manager only carries its plans out.  It closes a
connection itself when the pool says its last call is gone (the clients run without
``close_when_idle``): one authority for "is this connection still wanted" leaves no window in
which a call is placed on a connection that is idling out.  The manager exits once it has no
connection left and no member is waiting; a member that attached meanwhile gets ``FAILED
kind=retry`` and starts afresh.  A manager that never gets a call exits after
:data:`IDLE_EXIT`.

GRE: every connection's calls share the manager's raw socket (the frames travel over the unix
socket), and one :class:`~pptpkit.control.CallIdAllocator` hands out the call IDs of all its
connections, because the socket demultiplexes by (server address, our call ID).  Every raw GRE
socket receives a copy of every GRE packet in the namespace, so one socket per member would
multiply the demultiplexing work and make each member count the others' packets as unknown
calls; with the manager owning GRE, sequence/acknowledgement state lives next to the call state
it belongs to, and a member cannot keep sending on a call the manager cleared.  The price is one
local datagram hop per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from dataclasses import asdict, replace
from typing import Final

from pptpkit.compat.callmgr.codec import (
    MAX_FRAME,
    MAX_QUEUED,
    Message,
    MsgType,
    decode_message,
    encode_message,
)
from pptpkit.compat.callmgr.pool import ConnectionPool, Plan
from pptpkit.compat.callmgr.rendezvous import locked
from pptpkit.control import CallIdAllocator, Initiator
from pptpkit.errors import DecodeError, PptpkitError
from pptpkit.pptp.client import (
    CallRefusedError,
    CloseInfo,
    ControlConnectionError,
    PptpCall,
    PptpClient,
    PptpClientConfig,
)

__all__ = ["IDLE_EXIT", "MAX_MEMBERS", "CallManager", "Member", "main"]

log = logging.getLogger(__name__)

#: Members one manager serves (each holds one call); further ones are refused.
MAX_MEMBERS: Final = 256
#: Seconds a manager with no call at all stays around (its starter died before asking).
IDLE_EXIT: Final = 15.0


class Member:
    """One member connection: its socket, its call (at most one) and its send queue."""

    def __init__(self, mgr: CallManager, sock: socket.socket) -> None:
        self.mgr = mgr
        self.sock = sock
        self.call: PptpCall | None = None
        #: The control connection its call is on (or is waiting for), once placed.
        self.conn: int | None = None
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
    """The manager process's core: a listening unix socket, and the control connections
    (:class:`~pptpkit.pptp.client.PptpClient`, numbered by the pool) whose calls belong to the
    members."""

    def __init__(self, config: PptpClientConfig, path: str) -> None:
        self.config = replace(config, close_when_idle=False)
        self.path = path
        self.loop = asyncio.get_running_loop()
        self.pool: ConnectionPool[Member] = ConnectionPool(own_limit=config.max_calls)
        self.call_ids = CallIdAllocator()
        self.clients: dict[int, PptpClient] = {}
        self.members: set[Member] = set()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.listener: socket.socket | None = None
        self._ino: int | None = None
        self._closing = False
        self._connecting: dict[int, asyncio.Task[PptpClient]] = {}
        #: Connections we stopped because the pool no longer wanted them (not lost).
        self._stopped: set[int] = set()
        self.calls_served = 0
        self.connections_opened = 0

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
            member = Member(self, sock)
            if len(self.members) >= MAX_MEMBERS:
                member.send(Message(MsgType.FAILED, data={"kind": "busy",
                                                          "reason": "too many calls on this manager"}))
                sock.close()
                continue
            self.members.add(member)
            self.loop.add_reader(sock.fileno(), self._readable, member)

    def _readable(self, member: Member) -> None:
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

    # -- carrying out the pool's plans ------------------------------------------------------------

    def _carry_out(self, plan: Plan) -> None:
        for conn in plan.open:
            task = self.loop.create_task(self._connect(conn))
            # Its members see a failure; with none left waiting nobody else would retrieve it.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._connecting[conn] = task
        for conn in plan.close:
            self._stopped.add(conn)
            client = self.clients.get(conn)
            if client is not None and client.closed is not None and not client.closed.done():
                log.info("control connection %d has no call left: closing it", conn)
                self.loop.create_task(client.close())

    async def _connect(self, conn: int) -> PptpClient:
        client = PptpClient(self.config, call_ids=self.call_ids)
        self.clients[conn] = client
        try:
            peer = await client.connect()
        except ControlConnectionError as exc:
            log.warning("control connection %d failed: %s", conn, exc)
            self.clients.pop(conn, None)
            self._connecting.pop(conn, None)
            self.pool.lost(conn)
            self._maybe_exit()
            raise
        self._connecting.pop(conn, None)
        self.connections_opened += 1
        if peer.max_channels == 0:
            log.warning("%s announced Maximum Channels 0, which a PAC should not: "
                        "placing one call per control connection", self.config.server)
        assert client.closed is not None
        client.closed.add_done_callback(lambda fut: self._connection_closed(conn))
        # Before returning, so every member waiting for this connection sees where it now
        # belongs (calls over the limit have moved on).
        self._carry_out(self.pool.connected(conn, peer.max_channels))
        log.info("control connection %d up: room for %s call(s)", conn, self.pool.limit(conn))
        return client

    async def _client_for(self, member: Member) -> PptpClient:
        """The connection the pool put the member's call on, once it is up; follows the call
        when a connection's limit turns out too small for it."""
        while True:
            conn = self.pool.connection_of(member)
            if conn is None:
                raise ControlConnectionError("the control connection was lost")
            member.conn = conn
            task = self._connecting.get(conn)
            if task is not None:
                client = await asyncio.shield(task)
            else:
                client = self.clients[conn]
            if self.pool.connection_of(member) != conn:
                continue
            if client.closed is None or client.closed.done():
                raise ControlConnectionError("the control connection is closing")
            return client

    # -- calls ------------------------------------------------------------------------------------

    async def _open(self, member: Member) -> None:
        if self._closing:
            member.send(Message(MsgType.FAILED, data={"kind": "retry", "reason": "manager exiting"}))
            return
        self._carry_out(self.pool.place(member))
        client: PptpClient | None = None
        try:
            client = await self._client_for(member)
            call = await client.open_call()
        except CallRefusedError as exc:
            member.opening = False
            self._carry_out(self.pool.release(member))
            peer = asdict(client.peer) if client is not None and client.peer is not None else None
            member.send(Message(MsgType.FAILED, data={
                "kind": "refused", "reason": str(exc), "result_code": exc.result_code,
                "error_code": exc.error_code, "cause_code": exc.cause_code, "peer": peer}))
            self._maybe_exit()
            return
        except ControlConnectionError as exc:
            member.opening = False
            self._carry_out(self.pool.release(member))
            kind = "retry" if self._closing else "connect"
            member.send(Message(MsgType.FAILED, data={"kind": kind, "reason": str(exc)}))
            self._maybe_exit()
            return
        member.opening = False
        if member.gone:
            # member_gone released its place already.
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

    def _call_ended(self, member: Member, call: PptpCall, info: CloseInfo) -> None:
        # A closing connection ends its calls before it reports its own end, in the same batch
        # of events: decide "connection lost or call cleared" once the batch is through.
        self.loop.call_soon(self._report_end, member, call, info)

    def _report_end(self, member: Member, call: PptpCall, info: CloseInfo) -> None:
        conn = member.conn
        client = self.clients.get(conn) if conn is not None else None
        lost = client is not None and client.closed is not None and client.closed.done() \
            and conn not in self._stopped
        self._carry_out(self.pool.release(member))
        member.send(Message(MsgType.CLOSED, data={
            "reason": info.reason, "by": "local" if info.initiated_by is Initiator.LOCAL else "remote",
            "clean": info.clean, "result_code": info.result_code, "connection_lost": lost,
            "gre": asdict(call.stats)}))
        member.call = None

    def member_gone(self, member: Member) -> None:
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
            # Its clearing reaches _report_end, which releases the place.
            self.loop.create_task(call.close())
        else:
            self._carry_out(self.pool.release(member))
        self._maybe_exit()

    def _connection_closed(self, conn: int) -> None:
        log.info("control connection %d closed%s", conn, "" if conn in self._stopped else " (lost)")
        for member in self.pool.lost(conn):
            call = member.call
            if call is not None and not call.closed.done():
                # A connection normally ends its calls itself (reaching _report_end); one that
                # did not must still not leave its members waiting on a dead call.
                member.call = None
                member.send(Message(MsgType.CLOSED, data={
                    "reason": "control connection closed", "by": "remote", "clean": False,
                    "connection_lost": True}))
        self.clients.pop(conn, None)
        if not self.pool.connections:
            self.loop.create_task(self.shutdown("no control connection left"))

    def _maybe_exit(self) -> None:
        if self.members or self._closing:
            return
        if not self.pool.connections:
            self.loop.create_task(self.shutdown("no members left"))
        # Otherwise the last calls' clearing makes the pool close the connections, and
        # _connection_closed shuts us down.

    def _unlink(self) -> None:
        if self._ino is None:
            return
        try:
            with locked(self.path), contextlib.suppress(FileNotFoundError):
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
        for client in list(self.clients.values()):
            with contextlib.suppress(Exception):
                await client.close()
        for member in list(self.members):
            # Calls ended with the connections; flush what is queued, then close.
            member.writable()
            self.member_gone(member)
        if not self.done.done():
            self.done.set_result(None)


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

