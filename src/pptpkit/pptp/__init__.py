"""PPTP endpoints: the PNS (client) and PAC (server) sides of RFC 2637.

Each endpoint drives the sans-IO control engine (:mod:`pptpkit.control`) on a TCP adapter and
hands every established call a GRE channel (:mod:`pptpkit.io.grechannel`). What runs on top of
the call (the built-in PPP stack, a pppd on a pty) is decided by the layers above.
"""
