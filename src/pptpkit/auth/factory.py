"""Make the engine for a negotiated method and role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from pptpkit.auth.base import AuthEngine, AuthenticatorConfig, PeerConfig, Role
from pptpkit.auth.chap import ChapMd5Authenticator, ChapMd5Peer
from pptpkit.auth.eap import EapAuthenticator, EapPeer
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.mschap import MsChapV1Authenticator, MsChapV1Peer, MsChapV2Authenticator, MsChapV2Peer
from pptpkit.auth.pap import PapAuthenticator, PapPeer
from pptpkit.errors import ConfigError

__all__ = ["create_engine"]

_AUTHENTICATORS: Final[dict[AuthMethod, Callable[[AuthenticatorConfig, float], AuthEngine]]] = {
    AuthMethod.PAP: PapAuthenticator,
    AuthMethod.CHAP_MD5: ChapMd5Authenticator,
    AuthMethod.MSCHAP_V1: MsChapV1Authenticator,
    AuthMethod.MSCHAP_V2: MsChapV2Authenticator,
    AuthMethod.EAP: EapAuthenticator,
}

_PEERS: Final[dict[AuthMethod, Callable[[PeerConfig, float], AuthEngine]]] = {
    AuthMethod.PAP: PapPeer,
    AuthMethod.CHAP_MD5: ChapMd5Peer,
    AuthMethod.MSCHAP_V1: MsChapV1Peer,
    AuthMethod.MSCHAP_V2: MsChapV2Peer,
    AuthMethod.EAP: EapPeer,
}


def create_engine(
    method: AuthMethod, role: Role, config: AuthenticatorConfig | PeerConfig, now: float
) -> AuthEngine:
    """The engine running ``method`` as ``role``; the config type must match the role."""
    if role is Role.AUTHENTICATOR:
        if not isinstance(config, AuthenticatorConfig):
            raise ConfigError("an authenticator engine needs an AuthenticatorConfig")
        if config.external and method is AuthMethod.EAP:
            # EAP through RADIUS would relay EAP-Message attributes; we verify only what we
            # can hand over whole (PAP, CHAP, MS-CHAP), and the server refuses the mix at start.
            raise ConfigError("EAP cannot be verified externally (RADIUS)")
        return _AUTHENTICATORS[method](config, now)
    if not isinstance(config, PeerConfig):
        raise ConfigError("a peer engine needs a PeerConfig")
    return _PEERS[method](config, now)
