"""Authentication methods as LCP negotiates them.

Shared by LCP (which carries the method in its Authentication-Protocol option) and the auth
engines (which run it), so both agree on one spelling of every method.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

PROTO_PAP: Final = 0xC023
PROTO_CHAP: Final = 0xC223
PROTO_EAP: Final = 0xC227

_U16 = struct.Struct("!H")


class AuthMethod(enum.Enum):
    """One method; ``value`` is the Authentication-Protocol option data LCP carries for it."""

    PAP = b"\xc0\x23"
    CHAP_MD5 = b"\xc2\x23\x05"
    MSCHAP_V1 = b"\xc2\x23\x80"
    MSCHAP_V2 = b"\xc2\x23\x81"
    EAP = b"\xc2\x27"

    @property
    def protocol(self) -> int:
        """The PPP protocol number the method's packets use."""
        return int(_U16.unpack_from(self.value)[0])

    @property
    def option_data(self) -> bytes:
        return self.value

    @property
    def pppd_name(self) -> str:
        """The name pppd uses in require-/refuse- options (``require-mschap-v2`` ...)."""
        return _PPPD_NAMES[self]

    @classmethod
    def from_option_data(cls, data: bytes) -> AuthMethod | None:
        """The method an Authentication-Protocol option asks for, or None if we do not know it."""
        try:
            return cls(bytes(data))
        except ValueError:
            return None


_PPPD_NAMES: Final = {
    AuthMethod.PAP: "pap",
    AuthMethod.CHAP_MD5: "chap",
    AuthMethod.MSCHAP_V1: "mschap",
    AuthMethod.MSCHAP_V2: "mschap-v2",
    AuthMethod.EAP: "eap",
}

#: The order an authenticator offers methods in when nothing else is configured: strongest
#: first, the same preference as pppd (EAP, then MS-CHAPv2, MS-CHAP, CHAP-MD5, PAP).
DEFAULT_SERVER_ORDER: Final = (
    AuthMethod.EAP,
    AuthMethod.MSCHAP_V2,
    AuthMethod.MSCHAP_V1,
    AuthMethod.CHAP_MD5,
    AuthMethod.PAP,
)
