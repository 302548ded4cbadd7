"""Two asyncio helpers for programs that embed pptpkit: :func:`open_tunnel` and :func:`serve`.

They wire the same parts the commands use (a :class:`~pptpkit.pptp.client.PptpClient` or
:class:`~pptpkit.pptp.server.PptpServer`, a :class:`~pptpkit.io.link.PppLink` per call, a TUN
data plane) with the commands' secure defaults (MS-CHAPv2 and MPPE-128 required), and leave out
what is policy for a whole host: no routes beyond the tunnel's own, no resolv.conf, no retries,
no MSS clamp.  ``pptpkit connect`` and ``pptpkit server`` add those on top; a program that
wants them uses :mod:`pptpkit.vpn.connect` or the command.

Both return objects that are async context managers, so the tunnel or the server is torn down
cleanly (LCP Terminate, Call-Clear, Stop-Control-Connection, interfaces removed) however the
block is left.  Every client and server made here shares one call-ID allocator per process,
because they share the process's one raw GRE socket, which is demultiplexed by (peer address,
call ID).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from types import TracebackType

from pptpkit.auth.base import PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import SecretsProvider, StaticSecrets
from pptpkit.control import PPTP_PORT, CallIdAllocator
from pptpkit.errors import ConfigError
from pptpkit.io.dataplane import TunDataPlane
from pptpkit.io.link import DataPlane, PppLink
from pptpkit.ppp.session_config import LinkDown, LinkUp, MppePolicy, SessionConfig, SessionRole
from pptpkit.pptp.client import PptpCall, PptpClient, PptpClientConfig
from pptpkit.pptp.server import PptpServer, PptpServerConfig
from pptpkit.vpn.pool import AddressPool, parse_ip_list
from pptpkit.vpn.server import BuiltinConfig, BuiltinSessions

__all__ = ["Server", "Tunnel", "open_tunnel", "serve"]

_call_ids: CallIdAllocator | None = None


def _shared_call_ids() -> CallIdAllocator:
    global _call_ids
    if _call_ids is None:
        _call_ids = CallIdAllocator()
    return _call_ids


class Tunnel:
    """An open client tunnel: ``interface``, the negotiated ``up`` (addresses, MTU, MPPE),
    the PPP ``link`` (``send_ip`` for a program that attached no TUN), and :meth:`aclose`."""

    def __init__(self, client: PptpClient, call: PptpCall, link: PppLink, up: LinkUp) -> None:
        self.client = client
        self.call = call
        self.link = link
        self.up = up

    @property
    def interface(self) -> str | None:
        return self.link.interface

    @property
    def local_address(self) -> IPv4Address | None:
        return self.up.local_address

    @property
    def peer_address(self) -> IPv4Address | None:
        return self.up.peer_address

    @property
    def mppe(self) -> str:
        return self.up.mppe

    @property
    def closed(self) -> asyncio.Future[LinkDown]:
        """Resolves with the :class:`~pptpkit.ppp.session_config.LinkDown` when the tunnel ends,
        from either side."""
        return self.link.closed

    async def aclose(self, reason: str = "User request") -> LinkDown:
        """LCP Terminate, then hang up the call and the control connection."""
        try:
            return await self.link.aclose(reason)
        finally:
            with contextlib.suppress(Exception):
                await self.client.close()

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def _mppe_policy(mppe: bool | MppePolicy) -> MppePolicy:
    if isinstance(mppe, MppePolicy):
        return mppe
    return MppePolicy(required=True, bits_40=False, bits_56=False) if mppe else MppePolicy.nomppe()


async def open_tunnel(
    server: str,
    *,
    username: str,
    password: str,
    port: int = PPTP_PORT,
    mppe: bool | MppePolicy = True,
    data_plane: DataPlane | None = None,
    routes: Sequence[str] = (),
    timeout: float = 30.0,
) -> Tunnel:
    """Connect to ``server`` and bring a PPP session up on one call; returns once IPCP is up
    and the interface is configured.

    ``mppe``: True (default) requires MPPE-128, False refuses MPPE, or an explicit
    :class:`~pptpkit.ppp.session_config.MppePolicy`.  ``data_plane``: default a TUN interface
    ``pptpkit%d`` with ``routes`` (CIDR strings) through it.  Raises
    :class:`~pptpkit.errors.PptpkitError` subclasses (or ``OSError``) when the tunnel cannot come
    up: :class:`~pptpkit.io.link.LinkDownError` carries the PPP outcome (a wrong password, for
    one), :class:`TimeoutError` after ``timeout`` seconds.
    """
    if data_plane is None:
        data_plane = TunDataPlane(routes=routes)
    elif routes:
        raise ConfigError("routes go with the default data plane; give them to your data plane instead")
    client = PptpClient(PptpClientConfig(server=server, port=port, connect_timeout=timeout,
                                         call_timeout=timeout), call_ids=_shared_call_ids())
    link: PppLink | None = None
    try:
        async with asyncio.timeout(timeout):
            await client.connect()
            call = await client.open_call()
            config = SessionConfig(role=SessionRole.CLIENT,
                                   peer=PeerConfig(username=username, password=password),
                                   mppe=_mppe_policy(mppe))
            link = PppLink(config, call, data_plane, name=f"call {call.call_id} to {server}")
            bound = link
            call.on_close = lambda info: bound.lower_down(info.reason)
            link.start()
            # Frames the server sent first were held by the call; they reach a running LCP.
            call.on_frame = link.frame_received
            up = await link.wait_up()
    except BaseException:
        if link is not None and not link.closed.done():
            with contextlib.suppress(Exception):
                await link.aclose("setup abandoned", timeout=1.0)
        with contextlib.suppress(Exception):
            await client.close()
        raise
    return Tunnel(client, call, link, up)


class Server:
    """A running built-in server: ``port`` (the one bound), ``sessions`` (the
    :class:`~pptpkit.vpn.server.BuiltinSessions`), :meth:`reload_secrets`, :meth:`aclose`."""

    def __init__(self, server: PptpServer, sessions: BuiltinSessions) -> None:
        self.pptp = server
        self.sessions = sessions

    @property
    def port(self) -> int:
        return self.pptp.port

    @property
    def addresses(self) -> list[str]:
        return self.pptp.addresses

    def reload_secrets(self) -> bool:
        return self.sessions.reload_secrets()

    async def aclose(self) -> None:
        """LCP Terminate to every session, then Stop-Control-Connection to every peer."""
        try:
            await self.sessions.close_all()
        finally:
            await self.pptp.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


async def serve(
    *,
    local_ip: str,
    remote_ips: str | Sequence[str],
    secrets: SecretsProvider | Mapping[str, str],
    listen: str | None = None,
    port: int = PPTP_PORT,
    name: str = "pptpd",
    mppe: bool | MppePolicy = True,
    data_plane: DataPlane | None = None,
    max_sessions: int = 1000,
) -> Server:
    """Start a built-in PPTP server and return it once it listens.

    ``local_ip``: our tunnel address (pptpd's localip, one or a list/range as pptpd spells it);
    ``remote_ips``: the pool (``"198.51.100.10-20"`` or a list).  ``secrets``: a provider such
    as :class:`~pptpkit.auth.secrets.PppSecretsFile`, or ``{user: password}``.  Peers must
    authenticate with MS-CHAPv2; ``mppe`` as for :func:`open_tunnel`.  ``data_plane``: default a
    TUN interface per session (``pptpkit%d``).  ``port`` 0 binds any free port (see
    :attr:`Server.port`).
    """
    if isinstance(secrets, Mapping):
        secrets = StaticSecrets({(user, name): password for user, password in secrets.items()})
    remote = parse_ip_list(remote_ips) if isinstance(remote_ips, str) else list(remote_ips)
    sessions = BuiltinSessions(BuiltinConfig(
        pool=AddressPool(parse_ip_list(local_ip), remote), secrets=secrets, name=name,
        auth_policy=AuthPolicy(require=frozenset({AuthMethod.MSCHAP_V2})), mppe=_mppe_policy(mppe),
        max_sessions=max_sessions,
    ), data_plane if data_plane is not None else TunDataPlane())
    server = PptpServer(PptpServerConfig(listen=listen, port=port, max_connections=max_sessions,
                                         max_per_source=max_sessions),
                        sessions, call_ids=_shared_call_ids())
    await server.start()
    return Server(server, sessions)
