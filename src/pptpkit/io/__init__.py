"""Thin asyncio adapters between the sans-IO engines and the operating system.

* :mod:`.driver`: runs a byte-stream engine on an asyncio transport (TCP client/listener).
* :mod:`.gresock`: the namespace's one raw GRE socket, demultiplexed by (peer, call ID).
* :mod:`.tun`: a TUN interface on the loop.
* :mod:`.netconfig`: link/address/route configuration over rtnetlink, with undo.
* :mod:`.pty`: raw ptys, child programs on them, byte streams on file descriptors.

Submodules are imported explicitly (``from pptpkit.io.tun import TunDevice``) so that using one
does not pull in the dependencies of the others (pyroute2 for netconfig).
"""
