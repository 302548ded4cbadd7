"""RADIUS client support (issue 10): packets, the client engine, requests and answers.

Layer: ``radius`` ranks just above ``gre``/``crypto`` and below ``auth``/``control`` (see
tests/unit/test_layers.py): it is a set of sans-IO engines and codecs that need only ``wire``,
``errors`` and the RADIUS crypto of their own, and the authentication layer (and everything
above it) may use them to hand a peer's credentials to an AAA server.  Its asyncio UDP adapter
is :mod:`pptpkit.io.radius`, like every other adapter.

Modules: :mod:`~pptpkit.radius.crypto` (authenticators, Message-Authenticator, password hiding,
RFC 2548 salt encryption), :mod:`~pptpkit.radius.packet` (framing and attributes by name),
:mod:`~pptpkit.radius.client` (the engine: identifiers, retransmission, failover, verification),
:mod:`~pptpkit.radius.access` (Access-Requests per method, the answer as a typed result).

Library: **pyrad** (2.6), not pyrad2.  pyrad2 (3.x) needs Python >= 3.12 and pulls in loguru,
so it cannot install on Debian 12's Python 3.11, which pptpkit supports.  pyrad is maintained
(2.6 handles Blast-RADIUS: Message-Authenticator on requests, ``enforce_ma`` on replies), runs on
3.10-3.14 and reads FreeRADIUS-format dictionaries; but it is untyped, its asyncio client
owns the socket and the clock (no sans-IO engine to test on a virtual clock or fuzz), and its
crypto hangs off a mutable ``Packet``.  So pptpkit uses pyrad's ``Dictionary`` and attribute
value codecs, and writes the framing, the authenticators and the client engine itself.
"""
