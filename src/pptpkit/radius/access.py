"""Access-Requests by authentication method, and the answer as a typed result.

The requests carry what pppd's radius plugin and accel-ppp send for a PPTP call (RFC 2865 5,
RFC 2868 for the tunnel attributes, RFC 2548 for MS-CHAP):

* PAP: User-Password (RFC 2865 5.2, hidden by the engine with the server's secret).
* CHAP-MD5: CHAP-Password = Ident + Response, CHAP-Challenge (RFC 2865 5.3, 5.40).
* MS-CHAPv1: MS-CHAP-Challenge (8 octets) + MS-CHAP-Response = Ident, Flags, LM-Response,
  NT-Response (RFC 2548 2.1.3, 2.3.2).
* MS-CHAPv2: MS-CHAP-Challenge (16 octets) + MS-CHAP2-Response = Ident, Flags,
  Peer-Challenge, 8 reserved, NT-Response (RFC 2548 2.3.2, 2.3.3).

:func:`parse_access_answer` turns an Access-Accept/Reject into :class:`AccessResult`, with the
names of the attributes it did not use, so the server can log them once per session.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from pptpkit.errors import ConfigError
from pptpkit.radius.packet import Attribute, AttributeValue

__all__ = [
    "AccessResult",
    "CallInfo",
    "FramedAddress",
    "MppeKeys",
    "NasInfo",
    "chap_request",
    "mschapv1_request",
    "mschapv2_request",
    "pap_request",
    "parse_access_answer",
]

# RFC 2865 5.8: 0xFFFFFFFE = the NAS picks from its pool; 0xFFFFFFFF = the user may choose.
_POOL = ipaddress.IPv4Address("255.255.255.254")
_CLIENT = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True, kw_only=True)
class NasInfo:
    """What identifies this NAS (at least one of the two, RFC 2865 4.1)."""

    nas_identifier: str | None = None
    nas_ip_address: ipaddress.IPv4Address | None = None

    def __post_init__(self) -> None:
        if self.nas_identifier is None and self.nas_ip_address is None:
            raise ConfigError("a NAS needs NAS-Identifier or NAS-IP-Address")


@dataclass(frozen=True, kw_only=True)
class CallInfo:
    """One PPTP call: the port number the NAS gives it and the two tunnel endpoints."""

    nas_port: int
    client_address: str  # Calling-Station-Id and Tunnel-Client-Endpoint
    server_address: str | None = None  # Called-Station-Id and Tunnel-Server-Endpoint


def _common(nas: NasInfo, call: CallInfo, username: str) -> list[Attribute]:
    attrs = [Attribute("User-Name", username)]
    if nas.nas_ip_address is not None:
        attrs.append(Attribute("NAS-IP-Address", nas.nas_ip_address))
    if nas.nas_identifier is not None:
        attrs.append(Attribute("NAS-Identifier", nas.nas_identifier))
    attrs += [
        Attribute("NAS-Port", call.nas_port),
        Attribute("NAS-Port-Type", "Virtual"),
        Attribute("Service-Type", "Framed-User"),
        Attribute("Framed-Protocol", "PPP"),
        Attribute("Calling-Station-Id", call.client_address),
    ]
    if call.server_address is not None:
        attrs.append(Attribute("Called-Station-Id", call.server_address))
    attrs += [
        Attribute("Tunnel-Type", "PPTP", tag=0),
        Attribute("Tunnel-Medium-Type", "IPv4", tag=0),
        Attribute("Tunnel-Client-Endpoint", call.client_address),
    ]
    if call.server_address is not None:
        attrs.append(Attribute("Tunnel-Server-Endpoint", call.server_address))
    return attrs


def _need(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ConfigError(f"{name} is {size} octets, not {len(value)}")


def pap_request(nas: NasInfo, call: CallInfo, username: str, password: bytes) -> tuple[Attribute, ...]:
    if len(password) > 128:
        raise ConfigError("a PAP password for RADIUS is at most 128 octets")
    return (*_common(nas, call, username), Attribute("User-Password", password, secret=True))


def chap_request(nas: NasInfo, call: CallInfo, username: str, *, ident: int, challenge: bytes,
                 response: bytes) -> tuple[Attribute, ...]:
    _need("CHAP response", response, 16)
    if not 1 <= len(challenge) <= 253:
        raise ConfigError("a CHAP challenge is 1..253 octets")
    return (*_common(nas, call, username),
            Attribute("CHAP-Password", bytes([ident & 0xFF]) + response),
            Attribute("CHAP-Challenge", challenge))


def mschapv1_request(nas: NasInfo, call: CallInfo, username: str, *, ident: int, challenge: bytes,
                     lm_response: bytes, nt_response: bytes, use_nt: bool = True) -> tuple[Attribute, ...]:
    _need("MS-CHAP challenge", challenge, 8)
    _need("LM-Response", lm_response, 24)
    _need("NT-Response", nt_response, 24)
    value = bytes([ident & 0xFF, 1 if use_nt else 0]) + lm_response + nt_response
    return (*_common(nas, call, username),
            Attribute("MS-CHAP-Challenge", challenge, vendor=311),
            Attribute("MS-CHAP-Response", value, vendor=311))


def mschapv2_request(nas: NasInfo, call: CallInfo, username: str, *, ident: int,
                     authenticator_challenge: bytes, peer_challenge: bytes,
                     nt_response: bytes, flags: int = 0) -> tuple[Attribute, ...]:
    _need("MS-CHAPv2 authenticator challenge", authenticator_challenge, 16)
    _need("MS-CHAPv2 peer challenge", peer_challenge, 16)
    _need("NT-Response", nt_response, 24)
    value = bytes([ident & 0xFF, flags & 0xFF]) + peer_challenge + b"\0" * 8 + nt_response
    return (*_common(nas, call, username),
            Attribute("MS-CHAP-Challenge", authenticator_challenge, vendor=311),
            Attribute("MS-CHAP2-Response", value, vendor=311))


# -- the answer ------------------------------------------------------------------------------


class FramedAddress(enum.Enum):
    """The two special Framed-IP-Address values (RFC 2865 5.8)."""

    POOL = "pool"  # 255.255.255.254: the NAS assigns one from its pool
    CLIENT_CHOOSES = "client"  # 255.255.255.255: the user's own choice


@dataclass(frozen=True, kw_only=True)
class MppeKeys:
    """MS-MPPE-Send-Key / Recv-Key as the NAS uses them (RFC 2548 2.4.2: "Send" is the key
    for packets the NAS sends), or MS-CHAP-MPPE-Keys after MS-CHAPv1 (RFC 2548 2.4.1)."""

    send: bytes = field(repr=False)
    recv: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class AccessResult:
    accepted: bool
    #: MS-CHAP2-Success: the Ident and the authenticator response ("S=" + 40 hex digits).
    chap2_success_ident: int | None = None
    chap2_success: bytes | None = None
    #: MS-CHAP-Error: Ident and the error text ("E=691 R=0 C=... V=3 M=...").
    chap_error_ident: int | None = None
    chap_error: str | None = None
    #: From MS-MPPE-Send/Recv-Key (MS-CHAPv2, EAP).
    mppe_keys: MppeKeys | None = None
    #: MS-CHAP-MPPE-Keys (MS-CHAPv1): 8 octets LM key, 16 octets NT key (RFC 2548 2.4.1).
    mschapv1_lm_key: bytes | None = field(default=None, repr=False)
    mschapv1_nt_key: bytes | None = field(default=None, repr=False)
    #: RFC 2548 2.4.4: 1 = encryption allowed, 2 = required.
    encryption_policy: int | None = None
    #: RFC 2548 2.4.5: bit 0x2 = 40-bit keys, 0x4 = 128-bit keys.
    encryption_types: int | None = None
    framed_ip: ipaddress.IPv4Address | FramedAddress | None = None
    framed_pool: str | None = None
    session_timeout: int | None = None
    idle_timeout: int | None = None
    acct_interim_interval: int | None = None
    classes: tuple[bytes, ...] = ()
    reply_messages: tuple[str, ...] = ()
    filter_ids: tuple[str, ...] = ()
    #: Names of the attributes this result does not carry (unsupported, malformed, or with a
    #: value we cannot honour), in order, once each: the server logs them once per session.
    unused: tuple[str, ...] = ()


# Attributes a NAS expects in any answer and that need no action.
_ACKNOWLEDGED = frozenset({"Message-Authenticator"})


def _ident_and_text(value: AttributeValue) -> tuple[int, bytes] | None:
    if isinstance(value, bytes) and len(value) >= 1:
        return value[0], value[1:]
    return None


def parse_access_answer(accepted: bool, attributes: Sequence[Attribute]) -> AccessResult:
    """The typed content of an Access-Accept (``accepted``) or Access-Reject."""
    unused: list[str] = []
    values: dict[str, object] = {}
    classes: list[bytes] = []
    replies: list[str] = []
    filters: list[str] = []
    send_key: bytes | None = None
    recv_key: bytes | None = None

    def skip(attr: Attribute, why: str = "") -> None:
        label = attr.name + (f" ({why})" if why else "")
        if label not in unused:
            unused.append(label)

    for attr in attributes:
        name, value = attr.name, attr.value
        if attr.malformed:
            skip(attr, "malformed")
            continue
        if name in _ACKNOWLEDGED:
            continue
        if name == "Service-Type" and value == 2:
            continue  # Framed-User: what we asked for
        if name == "Framed-Protocol" and value == 1:
            continue  # PPP
        if name == "MS-CHAP2-Success" and accepted:
            parsed = _ident_and_text(value)
            if parsed is None:
                skip(attr, "malformed")
                continue
            values["chap2_success_ident"], values["chap2_success"] = parsed
        elif name == "MS-CHAP-Error":
            parsed = _ident_and_text(value)
            if parsed is None:
                skip(attr, "malformed")
                continue
            values["chap_error_ident"] = parsed[0]
            values["chap_error"] = parsed[1].decode("ascii", "replace")
        elif name == "MS-MPPE-Send-Key" and accepted and isinstance(value, bytes):
            send_key = value
        elif name == "MS-MPPE-Recv-Key" and accepted and isinstance(value, bytes):
            recv_key = value
        elif name == "MS-CHAP-MPPE-Keys" and accepted and isinstance(value, bytes):
            if len(value) < 24:
                skip(attr, "malformed")
                continue
            values["mschapv1_lm_key"], values["mschapv1_nt_key"] = value[:8], value[8:24]
        elif name == "MS-MPPE-Encryption-Policy" and isinstance(value, int):
            values["encryption_policy"] = value
        elif name == "MS-MPPE-Encryption-Types" and isinstance(value, int):
            values["encryption_types"] = value
        elif name == "Framed-IP-Address" and accepted and isinstance(value, ipaddress.IPv4Address):
            values["framed_ip"] = (FramedAddress.POOL if value == _POOL
                                   else FramedAddress.CLIENT_CHOOSES if value == _CLIENT else value)
        elif name == "Framed-Pool" and accepted and isinstance(value, str):
            values["framed_pool"] = value
        elif name == "Session-Timeout" and accepted and isinstance(value, int):
            values["session_timeout"] = value
        elif name == "Idle-Timeout" and accepted and isinstance(value, int):
            values["idle_timeout"] = value
        elif name == "Acct-Interim-Interval" and accepted and isinstance(value, int):
            values["acct_interim_interval"] = value
        elif name == "Class" and accepted and isinstance(value, bytes):
            classes.append(value)
        elif name == "Reply-Message" and isinstance(value, str):
            replies.append(value)
        elif name == "Filter-Id" and accepted and isinstance(value, str):
            filters.append(value)
        else:
            skip(attr)
    keys = None
    if send_key is not None and recv_key is not None:
        keys = MppeKeys(send=send_key, recv=recv_key)
    elif send_key is not None or recv_key is not None:
        # One key without the other cannot start MPPE; say so rather than use half.
        unused.append("MS-MPPE-Send-Key" if send_key is not None else "MS-MPPE-Recv-Key")
    return AccessResult(accepted=accepted, mppe_keys=keys, classes=tuple(classes),
                        reply_messages=tuple(replies), filter_ids=tuple(filters),
                        unused=tuple(unused), **values)  # type: ignore[arg-type]
