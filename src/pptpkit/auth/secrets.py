"""Secrets for PPP authentication: a provider interface and pppd's secrets-file format.

The engines only see :class:`SecretsProvider`; :class:`PppSecretsFile` reads the format of pppd's
``/etc/ppp/chap-secrets`` and ``/etc/ppp/pap-secrets`` (both share one syntax):

* one entry per line: ``client server secret [address ...] [-- option ...]``;
* words as in pppd's options files: separated by whitespace, ``"..."`` and ``'...'`` quote
  (quotes may appear inside a word and are removed), a backslash escapes the next character
  (``\\n \\r \\t \\a \\b \\f``, ``\\s`` for a space, ``\\ooo`` octal, ``\\xHH`` hex, anything
  else stands for itself) and a backslash at the end of a line continues the entry on the next
  one; ``#`` outside quotes starts a comment;
* ``*`` as client or server matches any name; the entry with the fewest wildcards wins (a
  literal client counts more than a literal server, as in pppd), the first of equals wins;
* a secret ``@/path`` is read from that file (its first word); it is read when the table is
  (re)loaded, so :meth:`PppSecretsFile.reload` also picks up changed indirect files;
* the address words: none, or a first word ``-``, allows no address; ``*`` allows any; ``!``
  before a word forbids it; ``a.b.c.d/n`` is a subnet and ``a.b.c.d/n+`` the one address
  ``network + unit + 1``; the first word that matches decides;
* our one addition: a word ``rate=DOWN[/UP]`` among the address words is the user's rate limit
  (:class:`RateLimit`, ``pptpkit server``'s shaper).  accel-ppp puts a bare ``DOWN/UP`` column
  after the address, but a bare ``1024/24`` is also what pppd reads as a subnet (its
  ``inet_addr`` takes ``1024`` for 0.0.4.0), so we want the ``rate=`` prefix: no address or
  host name has an ``=``, and pppd itself skips such a word with a warning (put it after an
  address word, as accel-ppp does, so that pppd still sees an address list).

Files are decoded as Latin-1, so every byte of a name or secret survives unchanged (the engines
encode names back to Latin-1 for the wire, and MS-CHAP's NT hash of such a string equals pppd's
byte-wise widening of the secret).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from pptpkit.errors import ConfigError

__all__ = [
    "MAX_RATE_KBIT",
    "AddressPolicy",
    "AddressRule",
    "PppSecretsFile",
    "RateLimit",
    "SecretMatch",
    "SecretReader",
    "SecretsProvider",
    "StaticSecrets",
    "parse_rate",
    "parse_secrets",
    "read_secret_file",
]

#: pppd's MAXWORDLEN: no word (name, secret, address) in a secrets file may be longer.
MAX_WORD_LEN: Final = 1024
#: Upper bound on the size of a secrets file or an indirect ``@/path`` secret file we read.
MAX_FILE_SIZE: Final = 8 * 1024 * 1024
#: Upper bound on the number of entries in one table.
MAX_ENTRIES: Final = 200_000
#: Upper bound on address words on one line.
MAX_ADDRESS_WORDS: Final = 1024

#: The highest rate a limit may name (100 Gbit/s), in kbit/s.
MAX_RATE_KBIT: Final = 100_000_000

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True, slots=True)
class AddressRule:
    """One word of an address list: ``network`` allowed (or forbidden when ``allow`` is False).

    ``network`` None means ``*`` (every address).  ``per_unit`` is pppd's ``addr/n+`` form: of
    the subnet only the address ``network + unit + 1`` is meant.
    """

    allow: bool
    network: IPNetwork | None
    per_unit: bool = False

    def matches(self, addr: IPAddress, unit: int | None) -> bool:
        if self.network is None:
            return True
        if addr.version != self.network.version:
            return False
        if self.per_unit:
            if unit is None or unit < 0:
                return False
            wanted = int(self.network.network_address) + unit + 1
            return int(addr) == wanted and addr in self.network
        return addr in self.network


def _never_allowed(addr: IPAddress) -> bool:
    # pppd refuses these whatever the secrets say (auth.c bad_ip_adrs): they cannot be a peer's
    # address and would hijack local routing.
    return (
        addr.is_loopback
        or addr.is_multicast
        or addr.is_unspecified
        or (isinstance(addr, ipaddress.IPv4Address) and int(addr) == 0xFFFFFFFF)
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class AddressPolicy:
    """The remote addresses a secret allows; the first rule that matches decides."""

    rules: tuple[AddressRule, ...] = ()

    @classmethod
    def allow_any(cls) -> AddressPolicy:
        return cls(rules=(AddressRule(allow=True, network=None),))

    @classmethod
    def allow_none(cls) -> AddressPolicy:
        return cls(rules=())

    @property
    def allows_any(self) -> bool:
        """True when the first rule is a bare ``*`` (the peer may use whatever it likes)."""
        return bool(self.rules) and self.rules[0].allow and self.rules[0].network is None

    @property
    def allows_nothing(self) -> bool:
        return not any(r.allow for r in self.rules)

    def permits(self, addr: str | IPAddress, unit: int | None = None) -> bool:
        """May the peer use ``addr``?  ``unit`` is the ppp unit number for ``addr/n+`` rules."""
        if isinstance(addr, str):
            try:
                addr = ipaddress.ip_address(addr)
            except ValueError:
                return False
        if _never_allowed(addr):
            return False
        for rule in self.rules:
            if rule.matches(addr, unit):
                return rule.allow
        return False

    def single_address(self, unit: int | None = None) -> IPAddress | None:
        """The address to offer when the list names exactly one host (as pppd does), else None."""
        allowed = [r for r in self.rules if r.allow]
        if len(allowed) != 1 or len(self.rules) != 1:
            return None
        rule = allowed[0]
        if rule.network is None:
            return None
        if rule.per_unit:
            if unit is None or unit < 0:
                return None
            return ipaddress.ip_address(int(rule.network.network_address) + unit + 1)
        if rule.network.num_addresses == 1:
            return rule.network.network_address
        return None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A user's rate limit in kbit/s (1000 bit/s, as tc and accel-ppp count): ``down`` towards
    the client, ``up`` from it; 0 leaves that direction unlimited."""

    down: int
    up: int

    def __str__(self) -> str:
        return f"{self.down or '-'}/{self.up or '-'} kbit/s"


_RATE_UNITS: Final = {"": 1, "k": 1, "m": 1000, "g": 1000_000}


def _parse_kbit(text: str) -> int:
    number, unit = text, ""
    if text and text[-1].lower() in "kmg":
        number, unit = text[:-1], text[-1].lower()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"bad rate {text!r} (a number of kbit/s, or with a suffix k, M or G)") from None
    if not number[:1].isdigit():
        raise ValueError(f"bad rate {text!r} (a number of kbit/s, or with a suffix k, M or G)")
    kbit = round(value * _RATE_UNITS[unit])
    if kbit > MAX_RATE_KBIT:
        raise ValueError(f"rate {text!r} is above {MAX_RATE_KBIT // 1000_000} Gbit/s")
    if kbit == 0 and value != 0:
        raise ValueError(f"rate {text!r} is below 1 kbit/s")
    return kbit


def parse_rate(text: str) -> RateLimit:
    """``DOWN[/UP]`` (accel-ppp's shape): kbit/s, or with a suffix ``k``/``M``/``G`` (``4M/512k``);
    ``UP`` defaults to ``DOWN``; 0 leaves a direction unlimited.  ValueError says what is wrong."""
    down_text, slash, up_text = text.partition("/")
    down = _parse_kbit(down_text)
    up = _parse_kbit(up_text) if slash else down
    if down == 0 and up == 0:
        raise ValueError(f"rate {text!r} limits nothing")
    return RateLimit(down, up)


@dataclass(frozen=True, kw_only=True, slots=True)
class SecretMatch:
    """The result of a lookup: the secret and what comes with it.

    ``source`` says where it came from (``path:line`` for files) for logs; ``client`` and
    ``server`` are the entry's fields as written (possibly ``*``); ``options`` are the words after
    ``--`` on the line, uninterpreted; ``rate``: the entry's ``rate=`` word, if any.
    """

    secret: str
    addresses: AddressPolicy
    source: str
    client: str = ""
    server: str = ""
    options: tuple[str, ...] = ()
    rate: RateLimit | None = None


class SecretsProvider(Protocol):
    """Looks up the secret a ``client`` uses to authenticate to a ``server``.

    ``server`` None means "not known" (a PAP peer that was not told the remote name): any entry
    for the client qualifies.  Returns None when there is no entry.
    """

    def lookup(self, client: str, server: str | None) -> SecretMatch | None: ...


_WILD: Final = "*"
_RATE_WORD: Final = "rate="


@dataclass(frozen=True, kw_only=True, slots=True)
class _Entry:
    client: str
    server: str
    secret: str
    addresses: AddressPolicy
    options: tuple[str, ...]
    source: str
    rate: RateLimit | None = None

    def score(self, client: str, server: str | None) -> int:
        """-1 when the entry does not apply, else how specific it is (higher is better)."""
        score = 0
        if self.client == _WILD:
            pass
        elif self.client == client:
            score += 2
        else:
            return -1
        if self.server == _WILD:
            pass
        elif server is None:
            # Unknown remote name: any server field qualifies, but only a literal one that
            # actually matched may count as more specific.
            pass
        elif self.server == server:
            score += 1
        else:
            return -1
        return score


def _best(entries: Iterable[_Entry], client: str, server: str | None) -> SecretMatch | None:
    best: _Entry | None = None
    best_score = -1
    for entry in entries:
        s = entry.score(client, server)
        if s > best_score:
            best, best_score = entry, s
            if s == 3:
                break
    if best is None:
        return None
    return SecretMatch(
        secret=best.secret,
        addresses=best.addresses,
        source=best.source,
        client=best.client,
        server=best.server,
        options=best.options,
        rate=best.rate,
    )


# --- word splitting ------------------------------------------------------------------------

_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "s": " ",
    "t": "\t",
}
_OCTAL: Final = frozenset("01234567")
_HEX: Final = frozenset("0123456789abcdefABCDEF")


@dataclass(slots=True)
class _Line:
    number: int
    words: list[str] = field(default_factory=list)


def split_words(text: str, path: str) -> list[_Line]:
    """Split ``text`` into logical lines of words (pppd's getword rules, line-oriented)."""
    lines: list[_Line] = []
    current = _Line(1)
    lineno = 1
    word: list[str] | None = None
    quote: str | None = None
    i = 0
    n = len(text)

    def finish_word() -> None:
        nonlocal word
        if word is not None:
            current.words.append("".join(word))
            word = None

    def add(ch: str) -> None:
        nonlocal word
        if word is None:
            word = []
        if len(word) >= MAX_WORD_LEN:
            raise ConfigError(f"word longer than {MAX_WORD_LEN} characters", path=path, line=lineno)
        word.append(ch)

    while i < n:
        c = text[i]
        i += 1
        if c == "\\":
            if i >= n:
                break  # a lone backslash at the very end of the file escapes nothing
            e = text[i]
            i += 1
            if e == "\n":
                lineno += 1  # continuation: the entry goes on, the word may too
                continue
            if e in _SIMPLE_ESCAPES:
                add(_SIMPLE_ESCAPES[e])
            elif e in _OCTAL:
                digits = e
                while len(digits) < 3 and i < n and text[i] in _OCTAL:
                    digits += text[i]
                    i += 1
                add(chr(int(digits, 8) & 0xFF))
            elif e == "x" and i < n and text[i] in _HEX:
                digits = text[i]
                i += 1
                if i < n and text[i] in _HEX:
                    digits += text[i]
                    i += 1
                add(chr(int(digits, 16)))
            else:
                add(e)
            continue
        if quote is not None:
            if c == quote:
                quote = None
            elif c == "\n":
                raise ConfigError(f"unterminated {quote} quote", path=path, line=lineno)
            else:
                add(c)
            continue
        if c == "\n":
            finish_word()
            if current.words:
                lines.append(current)
            lineno += 1
            current = _Line(lineno)
            continue
        if c in " \t\r\f\v":
            finish_word()
            continue
        if c == "#":
            finish_word()
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "\"'":
            quote = c
            if word is None:
                word = []  # "" is an empty word, not nothing
            continue
        add(c)
    if quote is not None:
        raise ConfigError(f"unterminated {quote} quote", path=path, line=lineno)
    finish_word()
    if current.words:
        lines.append(current)
    return lines


def _parse_addresses(words: list[str], path: str, line: int) -> AddressPolicy:
    if not words or words[0] == "-":
        return AddressPolicy.allow_none()
    if len(words) > MAX_ADDRESS_WORDS:
        raise ConfigError(f"more than {MAX_ADDRESS_WORDS} address words", path=path, line=line)
    rules: list[AddressRule] = []
    for raw in words:
        allow = True
        word = raw
        if word.startswith("!"):
            allow = False
            word = word[1:]
        if word == _WILD:
            rules.append(AddressRule(allow=allow, network=None))
            continue
        per_unit = False
        if word.endswith("+") and "/" in word:
            per_unit = True
            word = word[:-1]
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            raise ConfigError(
                f"bad address {raw!r} (expected an IP address, address/bits, '*' or '-'; "
                "host names are not supported)",
                path=path,
                line=line,
            ) from None
        rules.append(AddressRule(allow=allow, network=net, per_unit=per_unit))
    return AddressPolicy(rules=tuple(rules))


def _read_limited(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise ValueError(f"larger than {MAX_FILE_SIZE} bytes")
    return data


#: ``read(path) -> text``: how :func:`parse_secrets` gets the text of an indirect secret file.
SecretReader = Callable[[str], str]


def read_secret_file(path: str) -> str:
    """The :data:`SecretReader` of the files on disk (size-capped, Latin-1 as pppd reads bytes)."""
    return _read_limited(path).decode("latin-1")


def _indirect_secret(spec: str, read: SecretReader | None, path: str, line: int) -> str:
    target = spec[1:]
    if read is None:
        raise ConfigError(f"indirect secret {spec}: this secrets source cannot read files", path=path,
                          line=line)
    try:
        text = read(target)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read indirect secret file {target}: {exc}", path=path, line=line) from None
    lines = split_words(text, target)
    if not lines:
        raise ConfigError(f"no secret in indirect secret file {target}", path=path, line=line)
    return lines[0].words[0]


def parse_secrets(text: str, path: str = "<secrets>", *, read: SecretReader | None = None) -> list[_Entry]:
    """Parse secrets-file ``text``; errors are :class:`ConfigError` naming ``path`` and the line.

    The parser reads nothing itself: pppd's indirect secrets (``@/path``) are fetched through
    ``read`` (:func:`read_secret_file` for the files on disk); without it they are an error.
    """
    entries: list[_Entry] = []
    for ln in split_words(text, path):
        words = ln.words
        if len(words) < 3:
            raise ConfigError(
                "an entry needs at least three fields: client server secret", path=path, line=ln.number
            )
        if len(entries) >= MAX_ENTRIES:
            raise ConfigError(f"more than {MAX_ENTRIES} entries", path=path, line=ln.number)
        client, server, secret = words[0], words[1], words[2]
        # pppd only treats "@/..." as indirect: "@foo" is a literal secret.
        if secret.startswith("@/"):
            secret = _indirect_secret(secret, read, path, ln.number)
        rest = words[3:]
        options: tuple[str, ...] = ()
        if "--" in rest:
            cut = rest.index("--")
            options = tuple(rest[cut + 1 :])
            rest = rest[:cut]
        rate: RateLimit | None = None
        addresses: list[str] = []
        for word in rest:
            if not word.startswith(_RATE_WORD):
                addresses.append(word)
                continue
            if rate is not None:
                raise ConfigError(f"a second {word!r}: one rate per entry", path=path, line=ln.number)
            try:
                rate = parse_rate(word[len(_RATE_WORD):])
            except ValueError as exc:
                raise ConfigError(str(exc), path=path, line=ln.number) from None
        if rate is not None:
            rest = addresses
        entries.append(
            _Entry(
                client=client,
                server=server,
                secret=secret,
                addresses=_parse_addresses(rest, path, ln.number),
                options=options,
                source=f"{path}:{ln.number}",
                rate=rate,
            )
        )
    return entries


class PppSecretsFile:
    """A pppd-format secrets file (chap-secrets, pap-secrets), loaded into memory.

    The constructor loads the file (raising :class:`ConfigError` on any problem).
    :meth:`reload` re-reads it atomically: on error the previous table stays in use and the
    error is raised.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._entries: tuple[_Entry, ...] = self._load()

    def _load(self) -> tuple[_Entry, ...]:
        try:
            data = _read_limited(self.path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read secrets file: {exc}", path=self.path) from None
        return tuple(parse_secrets(data.decode("latin-1"), self.path, read=read_secret_file))

    def reload(self) -> None:
        # Build the new table completely before swapping the single reference, so a lookup
        # running concurrently sees either the old or the new table, never a mixture.
        self._entries = self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, client: str, server: str | None) -> SecretMatch | None:
        return _best(self._entries, client, server)


class StaticSecrets:
    """An in-memory provider, for programmatic configuration and tests.

    Built from ``{(client, server): secret}`` (``*`` wildcards allowed, same precedence as the
    file) or from secrets-file text with :meth:`from_text`.
    """

    def __init__(
        self,
        secrets: Mapping[tuple[str, str], str] | None = None,
        *,
        addresses: AddressPolicy | None = None,
    ) -> None:
        addr = addresses if addresses is not None else AddressPolicy.allow_any()
        self._entries: tuple[_Entry, ...] = tuple(
            _Entry(
                client=c,
                server=s,
                secret=secret,
                addresses=addr,
                options=(),
                source=f"<static {c}:{s}>",
            )
            for (c, s), secret in (secrets or {}).items()
        )

    @classmethod
    def from_text(cls, text: str, path: str = "<string>") -> StaticSecrets:
        inst = cls()
        inst._entries = tuple(parse_secrets(text, path, read=read_secret_file))
        return inst

    def lookup(self, client: str, server: str | None) -> SecretMatch | None:
        return _best(self._entries, client, server)
