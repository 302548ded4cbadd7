"""Where the server and its tools meet on the file system, in a module of its own.

``pptpkit ctl`` needs only the control socket's path; importing it from the settings would pull
in the whole server (the session table, the data planes, netlink) and cost a command that
answers in milliseconds several hundred of them at start-up.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["DEFAULT_CTL_SOCKET"]

#: The control socket of ``pptpkit server`` and ``pptpkit ctl``; ``$PPTPKIT_CTL_SOCKET`` moves
#: both (a second server on one machine, or a test suite whose servers must not meet).
DEFAULT_CTL_SOCKET: Final = os.environ.get("PPTPKIT_CTL_SOCKET") or "/run/pptpkit/ctl.sock"
