"""Operating the built-in server: what watches or steers the session table from outside.

The session table (:mod:`pptpkit.vpn.server`) runs the sessions; everything an operator adds
around it - the control socket, metrics, hook scripts, shaping, RADIUS accounting - is a
:class:`ServerExtension` here.  An extension subscribes to the table's notices
(:mod:`pptpkit.vpn.notices`) and may ask it to act (kill a session, reload secrets), but the
table never imports an extension, so each one can be left out, tested with a list of notices,
and none of them is on the per-packet path.

``pptpkit server`` builds the extensions its settings ask for and starts them in order once
the sessions exist, before it listens; it stops them in reverse order after the sessions are
closed, so an extension sees every session's end (the shutdown's too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pptpkit.pptp.server import PptpServer
    from pptpkit.vpn.server import BuiltinSessions

__all__ = ["ServerExtension"]


class ServerExtension(Protocol):
    """Something ``pptpkit server`` runs beside the sessions (see the module docstring)."""

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        """Subscribe to ``sessions`` and open what the extension needs (sockets, ...).  An
        error here stops the server before it listens."""

    async def stop(self) -> None:
        """Release everything; called once, after every session has ended."""
