"""pptpkit: a PPTP VPN client and server in Python (RFC 2637, PPP, MPPE).

The public API, importable from here: the sans-IO engines with their configs and events
(``ControlConnection``, ``GreCall``, ``PppSession``), the asyncio endpoints (``PptpClient``,
``PptpServer``, ``PppLink``, the TUN data planes, ``BuiltinSessions``), the errors, and two
helpers, :func:`open_tunnel` and :func:`serve` (docs/api.md).  Names are loaded on first use
(PEP 562), so ``import pptpkit`` costs nothing: a command that needs only the control engine
does not pay for asyncio adapters, pyroute2 or the crypto backends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pptpkit.auth.base import (
        AuthenticatorConfig,
        PeerConfig,
    )
    from pptpkit.auth.methods import (
        AuthMethod,
    )
    from pptpkit.auth.policy import (
        AuthPolicy,
    )
    from pptpkit.auth.secrets import (
        PppSecretsFile,
        SecretsProvider,
        StaticSecrets,
    )
    from pptpkit.control import (
        CallCleared,
        CallEstablished,
        CallFailed,
        CallIdAllocator,
        CallRejected,
        CallRequested,
        ConnectionClosed,
        ConnectionEstablished,
        ControlConfig,
        ControlConnection,
        ProtocolViolation,
        Role,
    )
    from pptpkit.errors import (
        AuthenticationError,
        ConfigError,
        DecodeError,
        ExitStatus,
        PptpkitError,
        ProtocolError,
        StateError,
    )
    from pptpkit.gre import (
        GreCall,
        GreCallConfig,
        GreStats,
    )
    from pptpkit.io.dataplane import (
        SharedTunRouter,
        TunDataPlane,
    )
    from pptpkit.io.link import (
        DataPlane,
        LinkDownError,
        PppLink,
    )
    from pptpkit.ppp.session import (
        PppSession,
    )
    from pptpkit.ppp.session_config import (
        Authenticated,
        AuthenticationFailed,
        LinkDown,
        LinkUp,
        MppePolicy,
        NetworkDown,
        Outcome,
        Phase,
        PhaseChanged,
        SessionConfig,
        SessionEvent,
        SessionRole,
    )
    from pptpkit.pptp.client import (
        CloseInfo,
        PptpCall,
        PptpClient,
        PptpClientConfig,
    )
    from pptpkit.pptp.server import (
        CallHandler,
        PptpServer,
        PptpServerConfig,
        RejectCall,
        ServerCall,
    )
    from pptpkit.vpn.pool import (
        AddressPool,
    )
    from pptpkit.vpn.server import (
        BuiltinConfig,
        BuiltinSessions,
    )
    from pptpkit.vpn.tunnel import (
        Server,
        Tunnel,
        open_tunnel,
        serve,
    )

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "AuthenticationError": "pptpkit.errors",
    "ConfigError": "pptpkit.errors",
    "DecodeError": "pptpkit.errors",
    "ExitStatus": "pptpkit.errors",
    "PptpkitError": "pptpkit.errors",
    "ProtocolError": "pptpkit.errors",
    "StateError": "pptpkit.errors",
    "CallCleared": "pptpkit.control",
    "CallEstablished": "pptpkit.control",
    "CallFailed": "pptpkit.control",
    "CallIdAllocator": "pptpkit.control",
    "CallRejected": "pptpkit.control",
    "CallRequested": "pptpkit.control",
    "ConnectionClosed": "pptpkit.control",
    "ConnectionEstablished": "pptpkit.control",
    "ControlConfig": "pptpkit.control",
    "ControlConnection": "pptpkit.control",
    "ProtocolViolation": "pptpkit.control",
    "Role": "pptpkit.control",
    "GreCall": "pptpkit.gre",
    "GreCallConfig": "pptpkit.gre",
    "GreStats": "pptpkit.gre",
    "PppSession": "pptpkit.ppp.session",
    "Authenticated": "pptpkit.ppp.session_config",
    "AuthenticationFailed": "pptpkit.ppp.session_config",
    "LinkDown": "pptpkit.ppp.session_config",
    "LinkUp": "pptpkit.ppp.session_config",
    "MppePolicy": "pptpkit.ppp.session_config",
    "NetworkDown": "pptpkit.ppp.session_config",
    "Outcome": "pptpkit.ppp.session_config",
    "Phase": "pptpkit.ppp.session_config",
    "PhaseChanged": "pptpkit.ppp.session_config",
    "SessionConfig": "pptpkit.ppp.session_config",
    "SessionEvent": "pptpkit.ppp.session_config",
    "SessionRole": "pptpkit.ppp.session_config",
    "AuthenticatorConfig": "pptpkit.auth.base",
    "PeerConfig": "pptpkit.auth.base",
    "AuthMethod": "pptpkit.auth.methods",
    "AuthPolicy": "pptpkit.auth.policy",
    "PppSecretsFile": "pptpkit.auth.secrets",
    "SecretsProvider": "pptpkit.auth.secrets",
    "StaticSecrets": "pptpkit.auth.secrets",
    "CloseInfo": "pptpkit.pptp.client",
    "PptpCall": "pptpkit.pptp.client",
    "PptpClient": "pptpkit.pptp.client",
    "PptpClientConfig": "pptpkit.pptp.client",
    "CallHandler": "pptpkit.pptp.server",
    "PptpServer": "pptpkit.pptp.server",
    "PptpServerConfig": "pptpkit.pptp.server",
    "RejectCall": "pptpkit.pptp.server",
    "ServerCall": "pptpkit.pptp.server",
    "DataPlane": "pptpkit.io.link",
    "LinkDownError": "pptpkit.io.link",
    "PppLink": "pptpkit.io.link",
    "SharedTunRouter": "pptpkit.io.dataplane",
    "TunDataPlane": "pptpkit.io.dataplane",
    "AddressPool": "pptpkit.vpn.pool",
    "BuiltinConfig": "pptpkit.vpn.server",
    "BuiltinSessions": "pptpkit.vpn.server",
    "Server": "pptpkit.vpn.tunnel",
    "Tunnel": "pptpkit.vpn.tunnel",
    "open_tunnel": "pptpkit.vpn.tunnel",
    "serve": "pptpkit.vpn.tunnel",
}

__all__ = [
    "AddressPool",
    "AuthMethod",
    "AuthPolicy",
    "Authenticated",
    "AuthenticationError",
    "AuthenticationFailed",
    "AuthenticatorConfig",
    "BuiltinConfig",
    "BuiltinSessions",
    "CallCleared",
    "CallEstablished",
    "CallFailed",
    "CallHandler",
    "CallIdAllocator",
    "CallRejected",
    "CallRequested",
    "CloseInfo",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionEstablished",
    "ControlConfig",
    "ControlConnection",
    "DataPlane",
    "DecodeError",
    "ExitStatus",
    "GreCall",
    "GreCallConfig",
    "GreStats",
    "LinkDown",
    "LinkDownError",
    "LinkUp",
    "MppePolicy",
    "NetworkDown",
    "Outcome",
    "PeerConfig",
    "Phase",
    "PhaseChanged",
    "PppLink",
    "PppSecretsFile",
    "PppSession",
    "PptpCall",
    "PptpClient",
    "PptpClientConfig",
    "PptpServer",
    "PptpServerConfig",
    "PptpkitError",
    "ProtocolError",
    "ProtocolViolation",
    "RejectCall",
    "Role",
    "SecretsProvider",
    "Server",
    "ServerCall",
    "SessionConfig",
    "SessionEvent",
    "SessionRole",
    "SharedTunRouter",
    "StateError",
    "StaticSecrets",
    "TunDataPlane",
    "Tunnel",
    "__version__",
    "open_tunnel",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pptpkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
