"""The VPN on top of PPTP: client connect policy, routes, resolv.conf, sessions and settings.

This is where a tunnel becomes a network interface with routes and DNS on the client, and where
the server keeps its sessions and address pool.
"""
