"""The control socket of ``pptpkit server``: list, show and kill sessions, reload, counters.

Why a Unix socket and JSON lines: the operator is on the same host (root, or the server's own
user), so the kernel's file permissions and ``SO_PEERCRED`` are the whole authentication - no
password, no TCP port to firewall.  One JSON object per line each way keeps the protocol
readable with ``socat`` and trivially scriptable, and a line is a natural unit to bound.

Layers, as everywhere in pptpkit: :func:`parse_request`, :func:`answer` and :func:`handle_line`
are sans-IO (bytes in, bytes out, tested without a socket); what they act on is a
:class:`CtlBackend`, a small protocol of its own, so the built-in sessions
(:class:`BuiltinBackend`) and pptpd's program mode (:class:`ProgramBackend`, which has calls
and child processes but no PPP sessions) are served by the same server; :class:`CtlServer` is
the thin asyncio adapter, and :class:`CtlExtension` plugs it into ``pptpkit server`` as a
:class:`~pptpkit.ops.ServerExtension`.

What a local client can grow is capped: the line length (:data:`MAX_LINE`), the number of
clients at once (:data:`MAX_CLIENTS`), and the time a client may sit idle.  A request that does
not parse gets an error answer (``{"ok": false, "error": ..., "kind": ...}``), never a
traceback; ``kind`` lets the command line choose its exit status without matching words.

The socket path: its directory is created 0700 when missing (never changed when it exists:
it may be ``/tmp``), the socket is bound under umask 0177 and chmod 0600.  A socket file left by
a crashed server (connect refused) is replaced; one that answers belongs to a live server and
is an error, so two servers never share, or steal, one control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from pptpkit.compat.program import ProgramHandler
from pptpkit.control import DisconnectResult
from pptpkit.errors import PptpkitError
from pptpkit.io.throttle import LogThrottle, left_out_text
from pptpkit.vpn.notices import TerminateCause
from pptpkit.vpn.paths import DEFAULT_CTL_SOCKET

if TYPE_CHECKING:
    from pptpkit.gre import GreStats
    from pptpkit.pptp.server import PptpServer, ServerCall
    from pptpkit.vpn.server import BuiltinSessions, Session

__all__ = [
    "COMMANDS",
    "DEFAULT_CTL_SOCKET",
    "MAX_CLIENTS",
    "MAX_LINE",
    "BuiltinBackend",
    "CtlBackend",
    "CtlError",
    "CtlExtension",
    "CtlServer",
    "ErrorKind",
    "ProgramBackend",
    "Request",
    "answer",
    "encode",
    "handle_line",
    "parse_request",
]

log = logging.getLogger(__name__)

#: The longest request line (and so the most a client makes us buffer).
MAX_LINE: Final = 64 * 1024
#: Control clients connected at once; more are answered with an error and closed.
MAX_CLIENTS: Final = 8
#: Seconds a connected client may send nothing before it is closed.
IDLE_TIMEOUT: Final = 300.0
COMMANDS: Final = ("sessions", "show", "kill", "reload", "stats")
#: The reason the peer's LCP Terminate-Request and the log carry for a kill.
KILL_REASON: Final = "killed by the administrator"


class ErrorKind:
    """The ``kind`` of an error answer (strings, so the protocol stays plain JSON)."""

    BAD_REQUEST = "bad-request"
    NO_SUCH_SESSION = "no-such-session"
    UNSUPPORTED = "unsupported"
    RELOAD_FAILED = "reload-failed"
    NOT_PERMITTED = "not-permitted"
    BUSY = "busy"
    INTERNAL = "internal"


class CtlError(PptpkitError):
    """A request that cannot be carried out; answered as ``{"ok": false, ...}``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request.  ``kill`` has exactly one of ``id``/``user``/``ip``; ``show`` an ``id``."""

    cmd: str
    id: str | None = None
    user: str | None = None
    ip: ipaddress.IPv4Address | None = None


_ARGS: Final[dict[str, frozenset[str]]] = {
    "sessions": frozenset(), "stats": frozenset(), "reload": frozenset(),
    "show": frozenset({"id"}), "kill": frozenset({"id", "user", "ip"}),
}


def parse_request(line: bytes) -> Request:
    """One request line -> :class:`Request`; :class:`CtlError` (bad-request) if it is not one."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CtlError(ErrorKind.BAD_REQUEST, f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CtlError(ErrorKind.BAD_REQUEST, "a request is a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or cmd not in _ARGS:
        raise CtlError(ErrorKind.BAD_REQUEST, f"cmd must be one of {', '.join(COMMANDS)}")
    extra = set(obj) - {"cmd"} - _ARGS[cmd]
    if extra:
        raise CtlError(ErrorKind.BAD_REQUEST, f"{cmd} takes no {', '.join(sorted(extra))}")
    values: dict[str, str] = {}
    for key in _ARGS[cmd]:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str) or not value or len(value) > 256:
                raise CtlError(ErrorKind.BAD_REQUEST, f"{key} must be a non-empty string")
            values[key] = value
    if cmd == "show" and "id" not in values:
        raise CtlError(ErrorKind.BAD_REQUEST, "show needs an id")
    if cmd == "kill" and len(values) != 1:
        raise CtlError(ErrorKind.BAD_REQUEST, "kill needs exactly one of id, user, ip")
    ip = None
    if "ip" in values:
        try:
            ip = ipaddress.IPv4Address(values["ip"])
        except ValueError:
            raise CtlError(ErrorKind.BAD_REQUEST, f"not an IPv4 address: {values['ip']!r}") from None
    return Request(cmd, id=values.get("id"), user=values.get("user"), ip=ip)


class CtlBackend(Protocol):
    """What the control socket acts on: the built-in sessions or program mode's calls."""

    mode: str

    def sessions(self) -> list[dict[str, Any]]:
        """Every live session (call), oldest first, as JSON-ready records."""
        ...

    def show(self, session_id: str) -> dict[str, Any] | None: ...

    def kill(self, request: Request) -> list[str]:
        """End what ``request`` selects; the ids ended (empty: nothing matched)."""
        ...

    def reload(self) -> None:
        """Re-read the secrets; :class:`CtlError` (reload-failed, unsupported) if not done."""
        ...

    def stats(self) -> dict[str, Any]: ...


def answer(request: Request, backend: CtlBackend) -> dict[str, Any]:
    """The answer to one request (:class:`CtlError` for a refusal)."""
    if request.cmd == "sessions":
        return {"ok": True, "mode": backend.mode, "sessions": backend.sessions()}
    if request.cmd == "show":
        assert request.id is not None
        record = backend.show(request.id)
        if record is None:
            raise CtlError(ErrorKind.NO_SUCH_SESSION, f"no session {request.id}")
        return {"ok": True, "mode": backend.mode, "session": record}
    if request.cmd == "kill":
        killed = backend.kill(request)
        if not killed:
            what = (f"session {request.id}" if request.id is not None
                    else f"session of user {request.user!r}" if request.user is not None
                    else f"session with address {request.ip}")
            raise CtlError(ErrorKind.NO_SUCH_SESSION, f"no {what}")
        return {"ok": True, "killed": killed}
    if request.cmd == "reload":
        backend.reload()
        return {"ok": True, "reloaded": True}
    return {"ok": True, "mode": backend.mode, "stats": backend.stats()}


def encode(obj: dict[str, Any]) -> bytes:
    """One response line."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def error_answer(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "kind": kind}


def handle_line(line: bytes, backend: CtlBackend) -> bytes:
    """A request line in, the response line out; never raises."""
    try:
        return encode(answer(parse_request(line), backend))
    except CtlError as exc:
        return encode(error_answer(exc.kind, str(exc)))
    except Exception as exc:
        log.exception("ctl: the request failed")
        return encode(error_answer(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}"))


# -- backends ------------------------------------------------------------------------------------


def _gre(stats: GreStats) -> dict[str, Any]:
    """The GRE call counters an operator reads for a bad line: loss, reordering, RTT."""
    return {"sent": stats.sent, "received": stats.received, "lost": stats.lost,
            "reordered": stats.reordered, "duplicates": stats.duplicates,
            "window_drops": stats.window_drops,
            "rtt_ms": None if stats.srtt is None else round(stats.srtt * 1000, 2)}


def _gre_socket(server: PptpServer) -> dict[str, Any] | None:
    sock = server.gre_socket
    return None if sock is None else dataclasses.asdict(sock.stats)


class BuiltinBackend:
    """The built-in server's sessions (:class:`~pptpkit.vpn.server.BuiltinSessions`)."""

    mode = "builtin"

    def __init__(self, sessions: BuiltinSessions, server: PptpServer,
                 clock: Callable[[], float] = time.time) -> None:
        self._sessions = sessions
        self._server = server
        self._clock = clock

    def record(self, s: Session) -> dict[str, Any]:
        link, call, up = s.link, s.call, s.up
        st = link.stats
        method = s.auth_method or (up.auth_method if up is not None else None)
        if link.finished:
            state = "ending"
        elif link.up is not None:
            state = "up"
        else:
            state = "authenticating" if s.preauth else "negotiating"
        return {
            "id": s.id, "user": s.user, "auth": method.pppd_name if method is not None else None,
            "peer": s.source, "peer_port": call.peer_port, "call_id": call.call_id,
            "peer_call_id": call.peer_call_id,
            "address": None if s.address is None else str(s.address),
            "local": None if up is None or up.local_address is None else str(up.local_address),
            "interface": link.interface, "state": state, "started": round(s.started, 3),
            "uptime": round(max(0.0, self._clock() - s.started), 1),
            "mppe": None if up is None else up.mppe,
            "bytes_in": st.octets_in, "bytes_out": st.octets_out,
            "packets_in": st.packets_in, "packets_out": st.packets_out,
            "gre": _gre(call.stats),
        }

    def sessions(self) -> list[dict[str, Any]]:
        return [self.record(s) for s in self._sessions.all()]

    def show(self, session_id: str) -> dict[str, Any] | None:
        s = self._sessions.find(session_id)
        return None if s is None else self.record(s)

    def kill(self, request: Request) -> list[str]:
        table = self._sessions
        if request.id is not None:
            found = table.find(request.id)
            chosen = [] if found is None else [found]
        elif request.user is not None:
            chosen = [s for s in table.all() if s.user == request.user]
        else:
            chosen = [s for s in table.all() if request.ip in (s.address, _ip(s.source))]
        for s in chosen:
            log.info("[%s] ctl: killing the session of user %r, peer %s", s.id, s.user or "-", s.source)
            table.kill(s, KILL_REASON, TerminateCause.ADMIN_RESET)
        return [s.id for s in chosen]

    def reload(self) -> None:
        table = self._sessions
        if table.config.external_auth:
            raise CtlError(ErrorKind.UNSUPPORTED, "nothing to reload: RADIUS checks the credentials")
        if not table.reload_secrets():
            raise CtlError(ErrorKind.RELOAD_FAILED,
                           f"secrets not reloaded, keeping the previous ones: {table.reload_error}")

    def stats(self) -> dict[str, Any]:
        t, server = self._sessions, self._server
        return {
            "sessions": t.sessions, "established": t.established, "preauth": t.preauth,
            "sessions_up_total": t.sessions_up_total, "auth_timeouts": t.auth_timeouts,
            "refused": {"max_sessions": t.refused_max_sessions, "per_source": t.refused_per_source,
                        "admission": t.refused_by_admission, "preauth": t.refused_preauth,
                        "connections_per_source": server.refused_per_source},
            "connections": server.connections, "calls_total": server.calls_total,
            "gre_socket": _gre_socket(server),
        }


def _ip(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


class ProgramBackend:
    """pptpd's program mode: the calls and their PPP programs (no users: the program
    authenticates).  A call's id is its call ID, unique in the server."""

    mode = "program"

    def __init__(self, server: PptpServer, clock: Callable[[], float] = time.time) -> None:
        self._server = server
        self._clock = clock

    def _calls(self) -> list[tuple[ServerCall, ProgramHandler]]:
        return [(c, c.handler) for c in self._server.calls if isinstance(c.handler, ProgramHandler)]

    def record(self, call: ServerCall, handler: ProgramHandler) -> dict[str, Any]:
        pair = handler.pair
        return {
            "id": str(call.call_id), "peer": call.peer_address, "peer_port": call.peer_port,
            "call_id": call.call_id, "peer_call_id": call.peer_call_id, "pid": handler.proc.pid,
            "started": round(handler.started, 3),
            "uptime": round(max(0.0, self._clock() - handler.started), 1),
            "local": None if pair is None else pair[0], "address": None if pair is None else pair[1],
            "gre": _gre(call.stats),
        }

    def sessions(self) -> list[dict[str, Any]]:
        return [self.record(c, h) for c, h in self._calls()]

    def show(self, session_id: str) -> dict[str, Any] | None:
        for c, h in self._calls():
            if str(c.call_id) == session_id:
                return self.record(c, h)
        return None

    def kill(self, request: Request) -> list[str]:
        if request.user is not None:
            raise CtlError(ErrorKind.UNSUPPORTED, "kill --user: the PPP program authenticates, the "
                                                  "server knows no user names (use an id or --ip)")
        chosen = []
        for c, h in self._calls():
            if request.id is not None:
                if str(c.call_id) == request.id:
                    chosen.append(c)
            elif request.ip in (_ip(c.peer_address), _ip(h.pair[1]) if h.pair is not None else None):
                chosen.append(c)
        for c in chosen:
            log.info("call %d: ctl: clearing the call from %s", c.call_id, c.peer_address)
            # Clearing the call stops its program (SIGTERM, then SIGKILL).
            c.clear(KILL_REASON, result=DisconnectResult.ADMIN_SHUTDOWN)
        return [str(c.call_id) for c in chosen]

    def reload(self) -> None:
        raise CtlError(ErrorKind.UNSUPPORTED, "nothing to reload: the PPP program reads its own secrets")

    def stats(self) -> dict[str, Any]:
        server = self._server
        return {"calls": len(self._calls()), "connections": server.connections,
                "calls_total": server.calls_total,
                "refused": {"connections_per_source": server.refused_per_source},
                "gre_socket": _gre_socket(server)}


# -- the socket ----------------------------------------------------------------------------------

_PEERCRED: Final = struct.Struct("3i")


def _prepare_path(path: str) -> None:
    """Create the directory (0700) if missing; remove a stale socket; refuse a live one."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise PptpkitError(f"control socket {path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("control socket %s: removing the socket a previous server left", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass  # a socket we cannot judge (timeout, permission): treat it as live
    finally:
        probe.close()
    raise PptpkitError(f"another server is running: control socket {path} answers "
                       "(use --ctl-socket PATH or --no-ctl)")


class CtlServer:
    """The asyncio side: ``await open(backend)``, then serve until ``await close()``."""

    def __init__(self, path: str = DEFAULT_CTL_SOCKET, *, max_clients: int = MAX_CLIENTS,
                 max_line: int = MAX_LINE, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.path = path
        self.max_clients = max_clients
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self._backend: CtlBackend | None = None
        self._handler: Callable[[bytes], Awaitable[bytes]] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._ident: tuple[int, int] | None = None
        self._refusal_log = LogThrottle()
        self.refused_clients = 0

    async def open(self, backend: CtlBackend) -> None:
        """Bind the socket; :class:`PptpkitError`/``OSError`` when it cannot be had."""
        self._backend = backend

        async def handle(line: bytes) -> bytes:
            return handle_line(line, backend)

        await self.open_handler(handle)

    async def open_handler(self, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        """:meth:`open` with a handler of request lines of its own (the supervisor of several
        workers asks them all); it must never raise."""
        _prepare_path(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)  # never a moment with a socket others may connect to
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
            st = os.stat(self.path)
            self._ident = (st.st_dev, st.st_ino)
            self._handler = handler
            # The stream's limit is the line bound: readline raises beyond it.
            self._server = await asyncio.start_unix_server(self._client, sock=sock,
                                                           limit=self.max_line + 1)
        except BaseException:
            sock.close()
            self._unlink()
            raise
        log.info("control socket %s", self.path)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._clients):
            writer.close()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._unlink()

    def _unlink(self) -> None:
        """Remove the socket file, only if it is still ours (a successor may own the path)."""
        ident, self._ident = self._ident, None
        if ident is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == ident:
                os.unlink(self.path)

    def _refuse(self, writer: asyncio.StreamWriter, kind: str, message: str) -> None:
        self.refused_clients += 1
        left_out = self._refusal_log(asyncio.get_running_loop().time())
        if left_out is not None:
            log.warning("control socket: refusing a client: %s%s", message, left_out_text(left_out))
        writer.write(encode(error_answer(kind, message)))
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = self._handler
        if handler is None:
            writer.close()
            return
        if len(self._clients) >= self.max_clients:
            self._refuse(writer, ErrorKind.BUSY, f"{self.max_clients} control clients already")
            return
        sock = writer.get_extra_info("socket")
        try:
            _pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except (OSError, AttributeError):
            uid = -1
        if uid not in (0, os.getuid()):
            self._refuse(writer, ErrorKind.NOT_PERMITTED, f"not permitted for uid {uid}")
            return
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except TimeoutError:
                    break
                except ValueError:
                    writer.write(encode(error_answer(
                        ErrorKind.BAD_REQUEST, f"request longer than {self.max_line} bytes")))
                    break
                if not line:
                    break
                if line.strip():
                    writer.write(await handler(line))
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()


class CtlExtension:
    """The control socket as a :class:`~pptpkit.ops.ServerExtension` of the built-in server."""

    def __init__(self, path: str = DEFAULT_CTL_SOCKET) -> None:
        self.server = CtlServer(path)

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        await self.server.open(BuiltinBackend(sessions, server))

    async def stop(self) -> None:
        await self.server.close()
