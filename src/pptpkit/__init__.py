"""pptpkit: a PPTP VPN client and server in Python (RFC 2637, PPP, MPPE)."""

__version__ = "0.1.0"
