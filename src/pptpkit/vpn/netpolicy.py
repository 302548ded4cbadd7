"""Firewall helpers of the built-in server: TCP MSS clamping on the tunnel interfaces.

Why: a host behind the server (or behind the client) answers a tunnelled client's SYN with an
MSS from its own 1500-byte Ethernet, and if ICMP fragmentation-needed is filtered anywhere on
the way, full-size segments towards the tunnel vanish (the classic PPTP blackhole).  Packets
the server itself originates or terminates need no rule: the kernel sizes them from the route
and interface MTU.  So only *forwarded* SYNs leaving through a tunnel interface are clamped, to
the MTU of the route they take (``rt mtu``), which on a per-session TUN is the interface MTU and
on the shared TUN the per-session route MTU.  The SYN from the client side already carries an
MSS derived from the client's own tunnel MTU.

The rules live in a table of their own (``inet pptpkit`` by default), written with
``nft -f -`` (the one place pptpkit runs a tool: nftables has no stable netlink binding in
Python), and the table is deleted on exit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from typing import Final

from pptpkit.errors import PptpkitError

__all__ = ["DEFAULT_TABLE", "MssClamp", "NftError", "nft_ruleset"]

log = logging.getLogger(__name__)

DEFAULT_TABLE: Final = "pptpkit"
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_IFPATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,14}\*?")


class NftError(PptpkitError):
    """``nft`` is missing or refused the rules."""


def nft_ruleset(table: str, interface_pattern: str) -> str:
    """The ruleset text: one forward-hook chain clamping SYNs that leave through a tunnel."""
    if not _NAME.fullmatch(table):
        raise ValueError(f"bad nft table name {table!r}")
    if not _IFPATTERN.fullmatch(interface_pattern):
        raise ValueError(f"bad interface pattern {interface_pattern!r}")
    # "add table" + "delete table" + definition: idempotent even if a crashed run left one.
    return (
        f"add table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain mss {{\n"
        f"    type filter hook forward priority mangle; policy accept;\n"
        f'    oifname "{interface_pattern}" tcp flags syn / syn,rst tcp option maxseg size set rt mtu\n'
        f"  }}\n"
        f"}}\n"
    )


async def _nft(script: str, nft: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        nft, "-f", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise NftError(f"nft failed ({proc.returncode}): {err.decode(errors='replace').strip()}")


class MssClamp:
    """``await install()`` the clamp, ``await remove()`` it (idempotent, never raises)."""

    def __init__(self, interface_pattern: str = "pptpkit*", *, table: str = DEFAULT_TABLE,
                 nft: str | None = None) -> None:
        self.table = table
        self.script = nft_ruleset(table, interface_pattern)
        self._nft = nft
        self.installed = False

    async def install(self) -> None:
        nft = self._nft or shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
        if nft is None:
            raise NftError("the nft program is not installed")
        self._nft = nft
        await _nft(self.script, nft)
        self.installed = True
        log.debug("nft table inet %s installed (TCP MSS clamping)", self.table)

    async def remove(self) -> None:
        if not self.installed or self._nft is None:
            return
        self.installed = False
        try:
            await _nft(f"delete table inet {self.table}\n", self._nft)
        except (NftError, OSError) as exc:
            log.warning("could not remove nft table inet %s: %s", self.table, exc)
