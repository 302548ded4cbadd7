"""The server's address pool: pptpd's ``localip``/``remoteip`` lists and the pairs handed out.

pptpd pairs the two lists in order when ``localip`` has several addresses, and shares one local
address among all calls when it has one; we keep that, since operators' configs depend on it.
The lowest free pair is always the one handed out, so a restart hands the same addresses in the
same order.  Free slots sit in a heap, so taking and returning a pair costs O(log n) however
large the pool, instead of a scan of every slot per call.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Container, Sequence
from typing import Final

from pptpkit.errors import ConfigError

__all__ = ["MAX_POOL_ADDRESSES", "AddressPool", "PrefixPool", "parse_ip_list"]

#: More addresses than this in one localip/remoteip list is certainly a typo (a /8 range).
MAX_POOL_ADDRESSES: Final = 65536


def parse_ip_list(text: str) -> list[str]:
    """pptpd's address list syntax: comma-separated items, each an IPv4 address or a range
    whose end is given as the last octet (``198.51.100.10-50``) or as a full address.

    Raises :class:`ConfigError` with the offending item.
    """
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ConfigError(f"empty item in address list {text!r}")
        start_text, dash, end_text = item.partition("-")
        try:
            start = ipaddress.IPv4Address(start_text.strip())
        except ValueError:
            raise ConfigError(f"{start_text.strip()!r} is not an IPv4 address (in {item!r})") from None
        if dash:
            end_text = end_text.strip()
            # ASCII only: str.isdigit() also accepts "²" and other digits int() refuses.
            if end_text.isascii() and end_text.isdigit():
                last = int(end_text)
                if last > 255:
                    raise ConfigError(f"range end {last} is not an octet (in {item!r})")
                end = ipaddress.IPv4Address(int(start) & ~0xFF | last)
            else:
                try:
                    end = ipaddress.IPv4Address(end_text)
                except ValueError:
                    raise ConfigError(f"{end_text!r} is not a range end (in {item!r})") from None
            if end < start:
                raise ConfigError(f"range {item!r} ends before it starts")
        else:
            end = start
        if len(out) + int(end) - int(start) + 1 > MAX_POOL_ADDRESSES:
            raise ConfigError(f"address list {text!r} has more than {MAX_POOL_ADDRESSES} addresses")
        for value in range(int(start), int(end) + 1):
            addr = str(ipaddress.IPv4Address(value))
            if addr not in seen:
                seen.add(addr)
                out.append(addr)
    return out


class AddressPool:
    """Per-call (local, remote) address pairs, as pptpd hands them out.

    One local address: shared by every call.  Several: paired with the remote addresses in
    order (pptpd's behaviour), so the pool size is the shorter list.  ``allocate`` returns None
    when every pair is in use.
    """

    def __init__(self, local: Sequence[str], remote: Sequence[str]) -> None:
        if not local or not remote:
            raise ConfigError("localip and remoteip both need at least one address")
        self.local = list(local)
        self.remote = list(remote)
        self._index = {addr: i for i, addr in enumerate(self.remote)}
        self._free: list[int] = list(range(self.size))  # sorted, so already a heap
        self._used: set[int] = set()

    @property
    def size(self) -> int:
        return len(self.remote) if len(self.local) == 1 else min(len(self.local), len(self.remote))

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self, exclude: Container[str] = ()) -> tuple[str, str] | None:
        """The lowest free pair whose remote address is not in ``exclude`` (addresses held
        otherwise, e.g. static ones from a secrets file)."""
        free = self._free
        skipped: list[int] = []
        try:
            while free:
                i = heapq.heappop(free)
                if self.remote[i] in exclude:
                    skipped.append(i)
                    continue
                self._used.add(i)
                local = self.local[0] if len(self.local) == 1 else self.local[i]
                return local, self.remote[i]
            return None
        finally:
            for i in skipped:
                heapq.heappush(free, i)

    def release(self, pair: tuple[str, str]) -> None:
        """Return a pair :meth:`allocate` gave; anything else (or a second release) is ignored."""
        i = self._index.get(pair[1])
        if i is None or i not in self._used:
            return
        self._used.discard(i)
        heapq.heappush(self._free, i)


class PrefixPool:
    """IPv6 prefixes of ``length`` carved from ``network`` (``--ipv6-prefix``), one per session,
    lowest free first - the same order after a restart, like the address pool.  Taking and
    returning one is O(log n); the pool never holds more than the sessions using it.

    ``share``: (index, count) - worker ``index`` of ``count`` (``--workers``) takes only every
    ``count``-th prefix from the ``index``-th on, so workers never hand out the same prefix and
    need not ask anyone: the prefixes are plenty (65 536 /64s in a /48), unlike IPv4 addresses.
    """

    def __init__(self, network: str, length: int = 64, *, share: tuple[int, int] = (0, 1)) -> None:
        try:
            self.network = ipaddress.IPv6Network(network)
        except ValueError as exc:
            raise ConfigError(f"--ipv6-prefix {network!r}: {exc}") from None
        if not self.network.prefixlen < length <= 128:
            raise ConfigError(f"--ipv6-prefix {network}: a /{length} per session does not fit in it")
        self.length = length
        self._offset, self._stride = share
        if not 0 <= self._offset < self._stride:
            raise ConfigError(f"prefix pool share {share} is not (index, count)")
        total = 1 << (length - self.network.prefixlen)
        #: Prefixes this pool may hand out.
        self.size = max(0, (total - self._offset + self._stride - 1) // self._stride)
        self._next = 0
        self._free: list[int] = []

    def allocate(self) -> ipaddress.IPv6Network | None:
        if self._free:
            slot = heapq.heappop(self._free)
        elif self._next < self.size:
            slot, self._next = self._next, self._next + 1
        else:
            return None
        return self._prefix(self._offset + slot * self._stride)

    def release(self, prefix: ipaddress.IPv6Network) -> None:
        index = (int(prefix.network_address) - int(self.network.network_address)) >> (128 - self.length)
        slot, rest = divmod(index - self._offset, self._stride)
        if rest == 0 and 0 <= slot < self._next and slot not in self._free:
            heapq.heappush(self._free, slot)

    def _prefix(self, index: int) -> ipaddress.IPv6Network:
        base = int(self.network.network_address) + (index << (128 - self.length))
        return ipaddress.IPv6Network((base, self.length))
