"""A server of several worker processes: what they share, and how they ask for it.

A Python process runs on one core, so ``pptpkit server --workers N`` runs N worker processes,
each a whole built-in server (control connections through ``SO_REUSEPORT``, its own raw GRE
socket filtered to its share of the call IDs, :mod:`pptpkit.gre.partition`).  What must stay one
across them lives in the supervisor, in a :class:`Ledger`: the session limits (in all and per
source), the caps on calls still authenticating, the control-connection limits, the address
pool and the static addresses.
Workers ask it over a socketpair; the supervisor answers each request before it reads the next,
so a burst of simultaneous logins on every worker is still served one at a time and no address
is handed out twice.

Why a coordinator and not shared memory: the decisions are a few dict operations, one round trip
per call setup (well under a millisecond on a socketpair), and a crashed worker can then never
leave a lock held or a table half-written: the supervisor forgets everything the worker held
(:meth:`Ledger.forget_worker`) and its addresses go back to the pool.

The protocol (sans-IO: :class:`Framer`, :func:`frame`, :class:`Ledger`): each message is a JSON
object behind a 4-byte big-endian length.  A request carries ``q`` (its number) and ``op``; its
reply carries ``r`` (the same number); a message with ``op`` and no ``q`` is a notice, never
answered.  Either side may ask: a worker asks the ledger (``admit``, ``authenticated``,
``claim``, ``connect``; notices ``unclaim``, ``release``, ``disconnect``) and tells the
supervisor ``ready``, its accounting records (``acct``) and login outcomes (``auth``); the
supervisor asks a worker for its ``ctl`` answer, its ``metrics`` or its verdict on a ``dae``
request, and tells it the lockouts it decided (``lock``).  A stream socketpair and not SOCK_SEQPACKET: a ``ctl
sessions`` answer of 20 000 sessions is megabytes, more than one datagram may be.

Where the ledger differs from a single process's own bookkeeping (:mod:`pptpkit.vpn.server`):
the pool pair is reserved when the call is admitted (one process takes it when IPCP asks, but
that question is synchronous and cannot wait for another process).  A call that finds the pool
empty is still admitted (it may get a static address from the secrets or RADIUS; without one
its IPCP fails, as in one process), and a session given a static address holds its reserved
pair until it ends, as a single process does once IPCP asked.

:class:`Port` is the asyncio adapter of one end of the socketpair.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from pptpkit.errors import PptpkitError
from pptpkit.vpn.pool import AddressPool

__all__ = [
    "MAX_FRAME",
    "Framer",
    "Ledger",
    "LedgerClient",
    "LedgerLimits",
    "LedgerRefusal",
    "Port",
    "PortClosed",
    "frame",
]

log = logging.getLogger(__name__)

_LEN: Final = struct.Struct("!I")
#: The largest message either side accepts (a ``ctl sessions`` answer of tens of thousands of
#: sessions fits; a corrupted length does not make us buffer gigabytes).
MAX_FRAME: Final = 256 * 1024 * 1024


class PortClosed(PptpkitError):
    """The other end of the socketpair is gone (or sent something that is not the protocol)."""


def frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


class Framer:
    """Bytes in, messages out; :class:`PortClosed` on a frame that is too long or not JSON."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if n > self.max_frame:
                raise PortClosed(f"a {n}-byte frame (at most {self.max_frame})")
            if len(buf) < 4 + n:
                break
            try:
                obj = json.loads(bytes(buf[4:4 + n]))
            except (UnicodeDecodeError, ValueError) as exc:
                raise PortClosed(f"a frame that is not JSON: {exc}") from None
            del buf[:4 + n]
            if not isinstance(obj, dict):
                raise PortClosed("a frame that is not a JSON object")
            out.append(obj)
        return out


@dataclass(frozen=True, slots=True)
class LedgerLimits:
    """The limits of :class:`~pptpkit.vpn.server.BuiltinConfig`, enforced across workers."""

    max_sessions: int
    max_per_source: int
    max_preauth: int
    max_preauth_per_source: int
    #: Control connections in all and from one address (0: no limit here).
    max_connections: int = 0
    max_connections_per_source: int = 0


@dataclass(slots=True)
class _Entry:
    source: str
    pair: tuple[str, str] | None
    preauth: bool = True
    static: str | None = None


def _up(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _down(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class Ledger:
    """The supervisor's view of every worker's sessions: limits, pool and static addresses.

    Entries are keyed by (worker index, session ID).  Every method is a plain function of the
    state (no I/O, no clock); :meth:`handle` maps one request to its answer.
    """

    def __init__(self, pool: AddressPool, limits: LedgerLimits) -> None:
        self.pool = pool
        self.limits = limits
        self._entries: dict[tuple[int, str], _Entry] = {}
        self._per_source: dict[str, int] = {}
        self._preauth_per_source: dict[str, int] = {}
        self._preauth = 0
        self._established = 0
        #: Remote addresses held (pool pairs and static addresses): the pool skips them.
        self._held: dict[str, int] = {}
        #: Static address -> who has it.
        self._static: dict[str, tuple[int, str]] = {}
        #: Control connections: (worker, key) -> source, and the count per source.
        self._connections: dict[tuple[int, str], str] = {}
        self._connections_per_source: dict[str, int] = {}

    @property
    def connections(self) -> int:
        return len(self._connections)

    def connect(self, worker: int, key: str, source: str) -> dict[str, Any]:
        """A control connection a worker accepted: within the limits of the whole server?"""
        lim = self.limits
        if (worker, key) in self._connections:
            return {"ok": True}
        if lim.max_connections and len(self._connections) >= lim.max_connections:
            # A single server's words for the same refusal.
            return {"ok": False, "why": f"{lim.max_connections} connections already (the limit)"}
        if lim.max_connections_per_source and (
                self._connections_per_source.get(source, 0) >= lim.max_connections_per_source):
            return {"ok": False,
                    "why": f"{lim.max_connections_per_source} connections from that address already"}
        self._connections[(worker, key)] = source
        _up(self._connections_per_source, source)
        return {"ok": True}

    def disconnect(self, worker: int, key: str) -> None:
        source = self._connections.pop((worker, key), None)
        if source is not None:
            _down(self._connections_per_source, source)

    @property
    def sessions(self) -> int:
        return len(self._entries)

    @property
    def established(self) -> int:
        return self._established

    @property
    def preauth(self) -> int:
        return self._preauth

    def holds(self, address: str) -> bool:
        return address in self._held

    def admit(self, worker: int, key: str, source: str) -> dict[str, Any]:
        """A new call: within the limits, a pool pair reserved for it; else why not (``kind``:
        ``max_sessions``, ``per_source``, ``preauth`` or ``pool``)."""
        lim = self.limits
        if (worker, key) in self._entries:
            return {"ok": False, "kind": "duplicate", "why": f"session {key} is known already"}
        if self._established >= lim.max_sessions:
            return {"ok": False, "kind": "max_sessions",
                    "why": f"{lim.max_sessions} sessions already (max sessions)"}
        if self._per_source.get(source, 0) >= lim.max_per_source:
            return {"ok": False, "kind": "per_source",
                    "why": f"{lim.max_per_source} sessions from {source} already (max per source)"}
        if self._preauth >= lim.max_preauth:
            return {"ok": False, "kind": "preauth",
                    "why": f"{lim.max_preauth} calls are authenticating already"}
        if self._preauth_per_source.get(source, 0) >= lim.max_preauth_per_source:
            return {"ok": False, "kind": "preauth",
                    "why": f"{lim.max_preauth_per_source} calls from {source} are authenticating already"}
        pair = self.pool.allocate(exclude=self._held)
        if pair is None and len(self.pool.local) > 1:
            # pptpd's pairing: the local address comes with the pair, so no pair, no call.
            return {"ok": False, "kind": "pool", "why": "no free address in the remoteip pool"}
        if pair is not None:
            _up(self._held, pair[1])
        self._entries[(worker, key)] = _Entry(source, pair)
        _up(self._per_source, source)
        _up(self._preauth_per_source, source)
        self._preauth += 1
        return {"ok": True, "pair": None if pair is None else list(pair)}

    def authenticated(self, worker: int, key: str) -> dict[str, Any]:
        """The call is through authentication: from the authenticating to the established;
        ``ok`` False if that was one more than ``max_sessions`` (the worker ends it)."""
        entry = self._entries.get((worker, key))
        if entry is None:
            return {"ok": False, "why": "unknown session"}
        if entry.preauth:
            entry.preauth = False
            self._preauth -= 1
            _down(self._preauth_per_source, entry.source)
            self._established += 1
            if self._established > self.limits.max_sessions:
                return {"ok": False, "why": f"{self.limits.max_sessions} sessions already (max sessions)"}
        return {"ok": True}

    def claim(self, worker: int, key: str, address: str) -> dict[str, Any]:
        """The session's peer gets ``address`` (not its reserved pair's): refused if any other
        session holds or has reserved it."""
        entry = self._entries.get((worker, key))
        if entry is None:
            return {"ok": False, "why": "unknown session"}
        if (entry.pair is not None and entry.pair[1] == address) or entry.static == address:
            return {"ok": True}
        holder = self._static.get(address)
        if holder is not None or address in self._held:
            who = f"session {holder[1]}" if holder is not None else "another session"
            return {"ok": False, "why": f"address {address} is in use by {who}"}
        self.unclaim(worker, key)
        entry.static = address
        self._static[address] = (worker, key)
        _up(self._held, address)
        if entry.pair is not None and len(self.pool.local) == 1:
            # The reserved pair is not needed: back to the pool, so the next call gets the
            # address a single process would have given it.
            _down(self._held, entry.pair[1])
            self.pool.release(entry.pair)
            entry.pair = None
            return {"ok": True, "released": True}
        return {"ok": True}

    def unclaim(self, worker: int, key: str) -> None:
        entry = self._entries.get((worker, key))
        if entry is None or entry.static is None:
            return
        address, entry.static = entry.static, None
        self._static.pop(address, None)
        _down(self._held, address)

    def release(self, worker: int, key: str) -> None:
        """The session is gone: everything it held is free again."""
        self.unclaim(worker, key)
        entry = self._entries.pop((worker, key), None)
        if entry is None:
            return
        _down(self._per_source, entry.source)
        if entry.preauth:
            self._preauth -= 1
            _down(self._preauth_per_source, entry.source)
        else:
            self._established -= 1
        if entry.pair is not None:
            _down(self._held, entry.pair[1])
            self.pool.release(entry.pair)

    def forget_worker(self, worker: int) -> int:
        """The worker is gone (crashed or stopped): release all it held; how many sessions."""
        keys = [key for (w, key) in self._entries if w == worker]
        for key in keys:
            self.release(worker, key)
        for conn in [key for (w, key) in self._connections if w == worker]:
            self.disconnect(worker, conn)
        return len(keys)

    def handle(self, worker: int, message: dict[str, Any]) -> dict[str, Any] | None:
        """One message from ``worker``: the reply's fields for a request, None for a notice.
        A request the ledger does not know is answered ``ok`` False, not dropped."""
        op, key = message.get("op"), message.get("key")
        if not isinstance(key, str):
            return {"ok": False, "why": "no session key"} if "q" in message else None
        if op == "admit":
            return self.admit(worker, key, str(message.get("source", "")))
        if op == "authenticated":
            return self.authenticated(worker, key)
        if op == "claim":
            return self.claim(worker, key, str(message.get("address", "")))
        if op == "connect":
            return self.connect(worker, key, str(message.get("source", "")))
        if op == "disconnect":
            self.disconnect(worker, key)
            return None
        if op == "unclaim":
            self.unclaim(worker, key)
        elif op == "release":
            self.release(worker, key)
        elif "q" in message:
            return {"ok": False, "why": f"unknown request {op!r}"}
        return None


#: Answers one request from the other end (the reply's fields).
RequestHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
#: Takes one notice from the other end.
NoticeHandler = Callable[[dict[str, Any]], None]


class Port:
    """One end of the supervisor-worker socketpair on asyncio: :meth:`request` (awaits the
    reply), :meth:`notify` (no reply); requests and notices from the other end go to
    ``on_request``/``on_notice``.  ``closed`` resolves when the other end is gone."""

    def __init__(self, on_request: RequestHandler | None = None,
                 on_notice: NoticeHandler | None = None) -> None:
        self.on_request = on_request
        self.on_notice = on_notice
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def open(self, sock: Any) -> None:
        """Start on a connected stream socket (ours from here on)."""
        reader, self._writer = await asyncio.open_connection(sock=sock, limit=2**20)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = Framer()
        why = "closed"
        try:
            while True:
                data = await reader.read(2**20)
                if not data:
                    break
                for message in framer.feed(data):
                    self._dispatch(message)
        except (PortClosed, ConnectionError, OSError) as exc:
            why = str(exc)
        finally:
            self._shut(why)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "r" in message:
            future = self._pending.pop(message["r"], None)
            if future is not None and not future.done():
                future.set_result(message)
        elif "q" in message:
            task = asyncio.get_running_loop().create_task(self._answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self.on_notice is not None:
            try:
                self.on_notice(message)
            except Exception:
                log.exception("a notice from the other process failed: %s", message.get("op"))

    async def _answer(self, message: dict[str, Any]) -> None:
        try:
            if self.on_request is None:
                reply: dict[str, Any] = {"ok": False, "why": "no requests taken here"}
            else:
                reply = await self.on_request(message)
        except Exception as exc:
            log.exception("a request from the other process failed: %s", message.get("op"))
            reply = {"ok": False, "why": f"internal error: {type(exc).__name__}"}
        self._send({**reply, "r": message["q"]})

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise PortClosed("the other process is gone")
        self._writer.write(frame(message))

    def notify(self, op: str, **fields: Any) -> None:
        """A notice; dropped (the other end is gone, and with it what it would be about)."""
        with contextlib.suppress(PortClosed):
            self._send({"op": op, **fields})

    async def request(self, op: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Ask and wait for the answer; :class:`PortClosed` if the other end goes away or does
        not answer in ``timeout`` seconds."""
        self._next += 1
        number = self._next
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        try:
            self._send({"op": op, "q": number, **fields})
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise PortClosed(f"no answer to {op} in {timeout:g} s") from None
        finally:
            self._pending.pop(number, None)

    def _shut(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PortClosed(f"the other process is gone ({why})"))
        self._pending.clear()
        if self._writer is not None:
            self._writer.close()
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        self._shut("closed here")


class LedgerClient:
    """A worker's side of the :class:`Ledger`, as :class:`~pptpkit.vpn.server.BuiltinSessions`
    uses it.  ``admit`` gives the reserved pair or raises :class:`LedgerRefusal`."""

    def __init__(self, port: Port) -> None:
        self.port = port

    async def admit(self, key: str, source: str) -> tuple[str, str] | None:
        """The pool pair reserved for the call (None: the pool is empty, and the session can
        only have a static address)."""
        reply = await self.port.request("admit", key=key, source=source)
        if not reply.get("ok"):
            raise LedgerRefusal(str(reply.get("kind", "")), str(reply.get("why", "refused")))
        if reply.get("pair") is None:
            return None
        local, remote = reply["pair"]
        return str(local), str(remote)

    async def authenticated(self, key: str) -> str | None:
        """None, or why the session must end (one more than max sessions)."""
        reply = await self.port.request("authenticated", key=key)
        return None if reply.get("ok") else str(reply.get("why", "refused"))

    async def claim(self, key: str, address: str) -> tuple[str | None, bool]:
        """(None, or why ``address`` cannot be the session's; whether the session's reserved
        pool pair went back to the pool)."""
        reply = await self.port.request("claim", key=key, address=address)
        return (None if reply.get("ok") else str(reply.get("why", "refused"))), bool(reply.get("released"))

    def unclaim(self, key: str) -> None:
        self.port.notify("unclaim", key=key)

    def release(self, key: str) -> None:
        self.port.notify("release", key=key)

    async def open(self, key: str, peer: str) -> str | None:
        """A :class:`~pptpkit.pptp.server.ConnectionGate`: the connection limits of the whole
        server."""
        reply = await self.port.request("connect", key=key, source=peer)
        return None if reply.get("ok") else str(reply.get("why", "refused"))

    def close(self, key: str) -> None:
        self.port.notify("disconnect", key=key)


class LedgerRefusal(PptpkitError):
    """The ledger refused a call; ``kind`` says which limit (``max_sessions``, ``per_source``,
    ``preauth``, ``pool``)."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind = kind
