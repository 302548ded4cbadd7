"""``pptpkit ppp [pppd options...]``: the command-line edge of :mod:`pptpkit.compat.userppp`.

The arguments are pppd's, not ours (``-pap``, ``+ipv6`` ... are pppd options), so they bypass
argparse: :func:`main` receives everything after ``ppp``.  ``pptpkit ppp --help`` prints the
usage.  A wrapper for pptpd's ``ppp`` keyword is two lines::

    #!/bin/sh
    exec pptpkit ppp "$@"
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Final

from pptpkit.cli.common import exit_help

__all__ = ["HELP", "add_ppp_parser", "main"]

_USAGE: Final = """\
usage: pptpkit ppp [pppd options...]

Run the built-in PPP stack on this terminal (or socketpair) in place of pppd: async HDLC on
fd 0 (fd 1 for output when fd 0 is read-only), a TUN interface (ppp%d, or ifname NAME) for IP.

Accepts pptpd's argument list (local, file OPTFILE, SPEED, LOCAL:REMOTE, ipparam, remotenumber,
the pptpd-logwtmp plugin) and the options pptp-linux users give pppd (name, user, password,
remotename, call PEER, require-mppe-128, noauth, defaultroute, usepeerdns, ...).  An option
that cannot be honoured stops the program with its file and line (exit status 2).

environment:
  PPTPKIT_PPP_ETC   directory of options, chap-secrets, peers/ (default /etc/ppp)
  PPTPKIT_PASSWORD  our password when none is given by the options or chap-secrets

"""


HELP: Final = _USAGE + "\n" + exit_help("ppp")


def add_ppp_parser(sub: Any, common: Any) -> Any:
    """Register ``ppp`` in ``pptpkit --help``; the arguments themselves never reach argparse
    (``pptpkit.cli.main.main`` hands them to :func:`main` first)."""
    return sub.add_parser("ppp", help="the built-in PPP stack in place of pppd (pptpd's 'ppp' "
                                      "program, or on pptp --nolaunchpppd's fd 0)",
                          description=HELP, add_help=False)


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if args[:1] in (["-h"], ["--help"]):
        print(HELP, end="")
        return 0
    from pptpkit.compat.userppp import main as run_main

    return run_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
