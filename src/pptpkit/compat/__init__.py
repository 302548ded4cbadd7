"""Compatibility with the classic Linux PPTP stack (pppd, pptpd, pptp-linux).

The parsers of pppd options and pptpd.conf, ``pptpkit ppp`` (a user-space pppd), pptpd's program
mode, the pppd launcher of ``connect --pppd`` and pptp-linux's call manager. These translate the
classic files and process models into pptpkit's own settings and endpoints; nothing below imports
this package.
"""
