"""The ``blast`` load generator's packet I/O: what it costs outside the servers, made small.

On a 2-core machine the generator shares the cores with the workers it measures, so every
microsecond it spends per packet is taken from them (``pptpkit bench workers``' 2-worker
figure is bounded by 2 S / (S + C), S the server's cost per packet, C the generator's, the
kernel work of each side included).  Three things cut C without changing what the servers do
(every packet still arrives on the veth, is decrypted, passes GRE and PPP, and is re-encrypted
and echoed back):

* **Sends in batches.** The packets are encrypted before the clock starts; :class:`Batches`
  lays their ``mmsghdr`` arrays out ahead of time too, so each refill of a session's window is
  one ``sendmmsg`` (through ctypes: libc's, no extension code) instead of a Python ``sendto``
  per packet.
* **Sent below IP.** The packets go out through a packet socket (``AF_PACKET``, bound to the
  device) as whole Ethernet frames, their Ethernet and IPv4 headers built ahead of time, as
  packet generators do: no route lookup, no IP output path, and no checksum computed
  over each payload while it is copied (a raw IP socket sums every octet it copies, for a
  checksum GRE does not have).  What reaches the server's veth is the same IPv4 packet.
  ``--tx raw`` keeps the raw IP socket, for comparison.
* **Echoes counted from their sequence numbers.** The server numbers every echo of a call
  (RFC 2637 enhanced GRE), and during the blast it sends nothing else with a number, so the
  number of the latest echo says how many came before it.  A socket filter (:func:`sample_filter`)
  lets through only the echoes whose number is a multiple of ``2**k``; the kernel still
  delivers every echo to the socket (clone and filter) but queues, wakes and copies to user
  space only those.  For the last window the filter admits every numbered packet, so the
  final count is exact.  A lost echo would still be counted by its successor's number: the
  admitted sample is checked for gaps (:attr:`EchoCount.missing`), which would show it.
* **A sample decrypted.** The admitted echoes among each session's first few hundred are
  decrypted with the session's own MPPE receiver and compared with the packets sent: the
  echoes are real, correctly encrypted packets of the session, not just numbers.  Only the
  first: a stateless MPPE receiver reaches a packet's key through one RC4 key change per
  packet since the last one it opened, so checking samples all along would cost the client a
  key change per echo, as much as decrypting them all.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Final

from pptpkit.crypto.mppe import MppeDecryptor
from pptpkit.errors import DecodeError
from pptpkit.ppp.frame import decode_frame

__all__ = ["Batches", "EchoCheck", "PacketPath", "detach_filter", "gre_seq", "inet_name", "sample_filter",
           "set_filter"]

_SO_ATTACH_FILTER: Final = 26
_SO_DETACH_FILTER: Final = 27
_INSN: Final = struct.Struct("=HBBI")
_LD_W_IND, _LD_B_IND, _LDX_MSH = 0x40, 0x50, 0xB1
_ALU_AND_K, _JEQ_K, _JSET_K, _RET_K = 0x54, 0x15, 0x45, 0x06
_PROTO_MPPE: Final = 0x00FD
_PROTO_IPV4: Final = 0x0021


def sample_filter(shift: int) -> bytes:
    """Classic BPF for a raw GRE socket: admit the GRE packets with a sequence number whose
    low ``shift`` bits are zero (``shift`` 0: every numbered packet), drop the rest, and every
    packet without a number (acknowledgements only)."""
    prog = [
        (_LDX_MSH, 0, 0, 0),                  # X = IPv4 header length
        (_LD_B_IND, 0, 0, 0),                 # GRE flags: C R K S s Recur
        (_JSET_K, 0, 4, 0x10),                # S: a sequence number follows the call ID
        (_LD_W_IND, 0, 0, 8),                 # the sequence number
        (_ALU_AND_K, 0, 0, (1 << shift) - 1),
        (_JEQ_K, 0, 1, 0),
        (_RET_K, 0, 0, 0xFFFF),
        (_RET_K, 0, 0, 0),
    ]
    return b"".join(_INSN.pack(*insn) for insn in prog)


def set_filter(sock: socket.socket, program: bytes) -> None:
    """``SO_ATTACH_FILTER``, replacing the socket's filter atomically and keeping what is queued
    (:func:`pptpkit.io.gresock.attach_filter` drains the queue, right for a new socket, wrong
    for switching filters mid-stream: the echoes queued would go uncounted)."""
    buf = ctypes.create_string_buffer(program, len(program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                    struct.pack("@HP", len(program) // _INSN.size, ctypes.addressof(buf)))


def detach_filter(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)


def gre_seq(gre_packet: bytes | bytearray | memoryview) -> int | None:
    """The sequence number of an enhanced GRE packet, or None (no S bit, or too short)."""
    if len(gre_packet) < 12 or not gre_packet[0] & 0x10:
        return None
    seq: int = struct.unpack_from("!I", gre_packet, 8)[0]
    return seq


_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_ETH_P_IP: Final = 0x0800
_SOL_PACKET: Final = 263
_PACKET_QDISC_BYPASS: Final = 20


def _checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PacketPath:
    """Sending GRE packets to ``peer`` through a packet socket: the socket, bound to the
    device, and the Ethernet and IPv4 headers each packet needs.

    The frames are whole Ethernet frames (``SOCK_RAW``) on a socket bound to the device, so a
    send names no destination: the kernel neither copies an address in nor looks the device up
    for each message, nor builds a link-layer header (measured: 2,400 -> 2,300 ns a packet at
    16 a batch, the server's receive path included).  The neighbour's hardware address comes
    from the namespace's ARP table (the control connection's TCP traffic has filled it); the
    source address is the one the kernel would choose for ``peer``."""

    def __init__(self, peer: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((peer, 9))
            self.source = socket.inet_aton(probe.getsockname()[0])
        self.peer = socket.inet_aton(peer)
        mac, device = _neighbour(peer)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.sock.setblocking(False)
        # Straight to the device's transmit routine (a veth has no queue to skip anyway).
        self.sock.setsockopt(_SOL_PACKET, _PACKET_QDISC_BYPASS, 1)
        # Protocol 0: the socket only sends.  Bound to ETH_P_IP it would also be handed a
        # clone of every IPv4 frame arriving on the device, the echoes included.
        self.sock.bind((device, 0))
        own: bytes = self.sock.getsockname()[4]
        self._ethernet = mac + own + struct.pack("!H", _ETH_P_IP)
        self.name = b""  # bound: the frames go to the device without a per-message address
        self._ident = 0

    def frame(self, gre_packet: bytes) -> bytes:
        """``gre_packet`` in the Ethernet frame and IPv4 header a raw socket would give it (DF
        set, TTL 64)."""
        self._ident = (self._ident + 1) & 0xFFFF
        header = _IPV4.pack(0x45, 0, 20 + len(gre_packet), self._ident, 0x4000, 64, 47, 0,
                            self.source, self.peer)
        return (self._ethernet + header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
                + gre_packet)

    def close(self) -> None:
        self.sock.close()


def _neighbour(address: str) -> tuple[bytes, str]:
    """(hardware address, device) of ``address`` in this namespace's ARP table."""
    with open("/proc/net/arp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if len(fields) >= 6 and fields[0] == address and int(fields[2], 16) & 0x2:
                return bytes.fromhex(fields[3].replace(":", "")), fields[5]
    raise RuntimeError(f"no ARP entry for {address}: send it something first")


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


def inet_name(peer: str) -> bytes:
    """``struct sockaddr_in`` of ``peer`` (port 0: a raw socket's destination)."""
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(peer))


class Batches:
    """One session's pre-encrypted GRE packets as a ready ``mmsghdr`` array: :meth:`send` puts
    packets ``[start, end)`` on the wire in one ``sendmmsg``.

    The iovecs point into the ``bytes`` objects themselves (kept referenced here), so laying
    the array out copies no packet."""

    def __init__(self, packets: Sequence[bytes], name: bytes) -> None:
        """``name``: the destination, a ``struct sockaddr_in``, or empty for a bound socket."""
        n = len(packets)
        self._packets = list(packets)
        self._name = ctypes.create_string_buffer(name, max(len(name), 1))
        self._iov = (_Iovec * max(n, 1))()
        self._msgs = (_Mmsghdr * max(n, 1))()
        name_at = ctypes.addressof(self._name)
        iov0 = ctypes.addressof(self._iov)
        for i, packet in enumerate(self._packets):
            self._iov[i].iov_base = ctypes.cast(ctypes.c_char_p(packet), ctypes.c_void_p).value
            self._iov[i].iov_len = len(packet)
            hdr = self._msgs[i].msg_hdr
            if name:
                hdr.msg_name = name_at
                hdr.msg_namelen = len(name)
            hdr.msg_iov = iov0 + i * ctypes.sizeof(_Iovec)
            hdr.msg_iovlen = 1
        self._base = ctypes.addressof(self._msgs)
        self._size = ctypes.sizeof(_Mmsghdr)
        self.count = n

    def send(self, fd: int, start: int, end: int) -> int:
        """Send packets ``[start, end)``; how many went (0 when the socket would block)."""
        sent = _sendmmsg(fd, self._base + start * self._size, end - start, socket.MSG_DONTWAIT)
        return sent if sent > 0 else 0


class EchoCheck:
    """Decrypts a sampled echo with the session's MPPE receiver and compares it with what was
    sent: the echo plane swaps the IPv4 addresses and returns the rest unchanged."""

    def __init__(self, decryptor: MppeDecryptor, sent: Callable[[int], bytes], count: int) -> None:
        self._decryptor = decryptor
        # Rebuilt on demand (the inner packets are deterministic): keeping 20 000 of 1400
        # octets per session would double the generator's memory.
        self._sent = sent
        self._count = count
        self.checked = 0
        self.failed = 0

    def check(self, gre_packet: bytes, index: int) -> None:
        """``gre_packet`` is the echo of inner packet ``index`` of the session."""
        self.checked += 1
        if not self._matches(gre_packet, index):
            self.failed += 1

    def _matches(self, gre_packet: bytes, index: int) -> bool:
        if not 0 <= index < self._count:
            return False
        offset = 8 + (4 if gre_packet[0] & 0x10 else 0) + (4 if gre_packet[1] & 0x80 else 0)
        try:
            protocol, body = decode_frame(gre_packet[offset:])
        except DecodeError:
            return False
        if protocol != _PROTO_MPPE:
            return False
        opened = self._decryptor.decrypt(body)
        if opened is None or opened[0] != _PROTO_IPV4:
            return False
        echo, sent = opened[1], self._sent(index)
        return (len(echo) == len(sent) and echo[12:16] == sent[16:20] and echo[16:20] == sent[12:16]
                and echo[20:] == sent[20:])
