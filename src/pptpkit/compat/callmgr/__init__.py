"""A call manager: every ``pptpkit pty --callmgr`` / ``connect --pppd`` process talking to one
server hands its call to one manager process, as pptp-linux's ``pptpcm`` does.

The manager owns the control connections to that server and the raw GRE socket; the member
processes exchange PPP frames with it over a unix socket.  It puts calls on as few control
connections as the server's Maximum Channels allows (see ``docs/callmgr.md``).  One module per
concern:

* :mod:`~pptpkit.compat.callmgr.codec`: the member <-> manager datagrams;
* :mod:`~pptpkit.compat.callmgr.rendezvous`: where the manager's socket is, and how the first
  member starts the manager (or replaces a crashed one);
* :mod:`~pptpkit.compat.callmgr.member`: :class:`ManagedClient`, what a member uses in place of a
  :class:`~pptpkit.pptp.client.PptpClient`;
* :mod:`~pptpkit.compat.callmgr.pool`: which control connection a call goes on (sans-IO);
* :mod:`~pptpkit.compat.callmgr.manager`: the manager process (``python -m
  pptpkit.compat.callmgr``).

This package re-exports what code outside it uses.
"""

from pptpkit.compat.callmgr.codec import MAX_FRAME, MAX_JSON, Message, MsgType, decode_message, encode_message
from pptpkit.compat.callmgr.manager import IDLE_EXIT, MAX_MEMBERS, CallManager
from pptpkit.compat.callmgr.member import ManagedCall, ManagedCallInfo, ManagedClient
from pptpkit.compat.callmgr.pool import ConnectionPool, Plan, call_limit
from pptpkit.compat.callmgr.rendezvous import ENV_RUN_DIR, open_member_socket, socket_path

__all__ = [
    "ENV_RUN_DIR",
    "IDLE_EXIT",
    "MAX_FRAME",
    "MAX_JSON",
    "MAX_MEMBERS",
    "CallManager",
    "ConnectionPool",
    "ManagedCall",
    "ManagedCallInfo",
    "ManagedClient",
    "Message",
    "MsgType",
    "Plan",
    "call_limit",
    "decode_message",
    "encode_message",
    "open_member_socket",
    "socket_path",
]
