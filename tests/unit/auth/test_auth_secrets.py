from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.auth.secrets import AddressPolicy, PppSecretsFile, StaticSecrets, parse_secrets, read_secret_file
from pptpkit.errors import ConfigError

GOLDEN = r"""# Secrets for authentication using CHAP
# client        server  secret                  IP addresses
alice           pptpd   "with space"            *
"bob smith"     *       'single "quoted"'       192.0.2.10
carol           pptpd   esc\saped\tand\101\x42  -
dave            pptpd   ""                      # empty secret, no addresses
eve pptpd mid"dle quo"ted 198.51.100.0/24 !198.51.100.7   # trailing comment
frank pptpd pass#notacomment? 192.0.2.1
grace pptpd "hash # inside quotes" *
heidi pptpd line\
continued 203.0.113.5
*               pptpd   wildserver              *
alice           *       alice-any-server        *
ivan pptpd opts 192.0.2.0/24+ -- mtu 1400
"""


def table(text: str = GOLDEN) -> StaticSecrets:
    return StaticSecrets.from_text(text, "chap-secrets")


def test_quoting_escapes_and_comments() -> None:
    t = table()
    got = {name: t.lookup(name, "pptpd") for name in ("alice", "bob smith", "carol", "dave", "eve", "grace")}
    assert got["alice"] is not None and got["alice"].secret == "with space"
    assert got["bob smith"] is not None and got["bob smith"].secret == 'single "quoted"'
    assert got["carol"] is not None and got["carol"].secret == "esc aped\tandAB"
    assert got["dave"] is not None and got["dave"].secret == ""
    assert got["eve"] is not None and got["eve"].secret == "middle quoted"
    assert got["grace"] is not None and got["grace"].secret == "hash # inside quotes"
    frank = t.lookup("frank", "pptpd")
    # '#' outside quotes starts a comment even inside a word, as in pppd's options files.
    assert frank is not None and frank.secret == "pass" and frank.addresses.allows_nothing


def test_continuation_keeps_line_number_of_entry_start() -> None:
    heidi = table().lookup("heidi", "pptpd")
    assert heidi is not None
    assert heidi.secret == "linecontinued"
    assert heidi.source == "chap-secrets:10"
    assert heidi.addresses.permits("203.0.113.5")


def test_sources_name_the_line() -> None:
    alice = table().lookup("alice", "pptpd")
    assert alice is not None and alice.source == "chap-secrets:3"


def test_wildcard_precedence() -> None:
    t = table()
    # exact client + exact server beats everything
    m = t.lookup("alice", "pptpd")
    assert m is not None and m.secret == "with space"
    # exact client + wildcard server beats wildcard client + exact server
    m = t.lookup("alice", "otherserver")
    assert m is not None and m.secret == "alice-any-server"
    m = t.lookup("mallory", "pptpd")
    assert m is not None and m.secret == "wildserver" and m.client == "*"
    assert t.lookup("mallory", "otherserver") is None
    # a literal client with wildcard server outranks "* pptpd" (pppd counts client higher)
    m = t.lookup("bob smith", "pptpd")
    assert m is not None and m.secret == 'single "quoted"'


def test_first_of_equal_matches_wins() -> None:
    t = table("a s first\na s second\n")
    m = t.lookup("a", "s")
    assert m is not None and m.secret == "first"


def test_unknown_server_matches_any_server_field() -> None:
    t = table("me serverA secretA\nme serverB secretB\n")
    m = t.lookup("me", None)
    assert m is not None and m.secret == "secretA"
    assert t.lookup("you", None) is None


def test_address_lists() -> None:
    t = table()
    alice = t.lookup("alice", "pptpd")
    assert alice is not None and alice.addresses.allows_any
    assert alice.addresses.permits("192.0.2.99")
    bob = t.lookup("bob smith", "pptpd")
    assert bob is not None
    assert bob.addresses.permits("192.0.2.10") and not bob.addresses.permits("192.0.2.11")
    assert bob.addresses.single_address() == ipaddress.ip_address("192.0.2.10")
    carol = t.lookup("carol", "pptpd")  # "-": none allowed
    assert carol is not None and carol.addresses.allows_nothing and not carol.addresses.permits("192.0.2.1")
    dave = t.lookup("dave", "pptpd")  # only three words: none allowed (pppd)
    assert dave is not None and not dave.addresses.permits("192.0.2.1")
    eve = t.lookup("eve", "pptpd")
    assert eve is not None
    assert eve.addresses.permits("198.51.100.6")
    # the subnet rule comes first and matches .7 too: the first match decides, as in pppd
    assert eve.addresses.permits("198.51.100.7")
    assert not eve.addresses.permits("203.0.113.1")


def test_exclusion_before_subnet() -> None:
    t = table("x s p !192.0.2.7 192.0.2.0/24\n")
    m = t.lookup("x", "s")
    assert m is not None
    assert not m.addresses.permits("192.0.2.7")
    assert m.addresses.permits("192.0.2.8")


def test_per_unit_rule_and_options() -> None:
    ivan = table().lookup("ivan", "pptpd")
    assert ivan is not None
    assert ivan.options == ("mtu", "1400")
    assert ivan.addresses.permits("192.0.2.4", unit=3)
    assert not ivan.addresses.permits("192.0.2.5", unit=3)
    assert not ivan.addresses.permits("192.0.2.4")  # unit unknown
    assert ivan.addresses.single_address(unit=0) == ipaddress.ip_address("192.0.2.1")


def test_never_allowed_addresses() -> None:
    anyaddr = AddressPolicy.allow_any()
    for bad in ("127.0.0.1", "224.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "not-an-ip"):
        assert not anyaddr.permits(bad)
    assert anyaddr.permits("2001:db8::1")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("ok s p\n\nonlytwo fields\n", 3, "at least three fields"),
        ('ok s p\nbad s "unterminated\n', 2, "unterminated"),
        ("# c\nok s p 192.0.2.300\n", 2, "bad address"),
        ("ok s p host.example.org\n", 1, "host names"),
        ("a s p\nb s p\\\n 10.0.0.1\nc s p bogus\n", 4, "bad address"),
    ],
)
def test_errors_carry_path_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_secrets(text, "/etc/ppp/chap-secrets")
    assert info.value.path == "/etc/ppp/chap-secrets"
    assert info.value.line == line
    assert str(info.value).startswith(f"/etc/ppp/chap-secrets:{line}: ")
    assert fragment in str(info.value)


def test_overlong_word_is_an_error() -> None:
    with pytest.raises(ConfigError, match="longer than"):
        parse_secrets("a s " + "x" * 2000 + "\n", "f")


def test_indirect_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / "alice.secret"
    secret_file.write_text('"from file"  ignored words\n')
    t = table(f"alice s @{secret_file}\nbob s @literal\n")
    alice = t.lookup("alice", "s")
    bob = t.lookup("bob", "s")
    assert alice is not None and alice.secret == "from file"
    assert bob is not None and bob.secret == "@literal"  # pppd: only "@/" is indirect
    with pytest.raises(ConfigError) as info:
        parse_secrets(f"x s p\nalice s @{tmp_path}/missing\n", "f", read=read_secret_file)
    assert info.value.line == 2 and "indirect" in str(info.value)
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no secret"):
        parse_secrets(f"alice s @{empty}\n", "f", read=read_secret_file)


def test_the_parser_reads_no_file_itself() -> None:
    """Parsing is text in, entries out: indirect secrets come through the reader given, and
    without one they are an error at their line, not a file opened behind the caller's back."""
    asked: list[str] = []

    def reader(path: str) -> str:
        asked.append(path)
        return "s3cret\n"

    entries = parse_secrets("alice s @/vault/alice\n", "f", read=reader)
    assert asked == ["/vault/alice"] and entries[0].secret == "s3cret"
    with pytest.raises(ConfigError) as info:
        parse_secrets("x s p\nalice s @/vault/alice\n", "f")
    assert info.value.line == 2 and "cannot read files" in str(info.value)


def test_file_provider_reload_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "chap-secrets"
    path.write_text("alice pptpd one *\n")
    provider = PppSecretsFile(path)
    assert len(provider) == 1
    first = provider.lookup("alice", "pptpd")
    assert first is not None and first.secret == "one" and first.source == f"{path}:1"

    path.write_text("alice pptpd two *\nbroken line\n")
    with pytest.raises(ConfigError) as info:
        provider.reload()
    assert info.value.line == 2 and info.value.path == str(path)
    still = provider.lookup("alice", "pptpd")
    assert still is not None and still.secret == "one"  # old table kept

    path.write_text("alice pptpd two *\nbob pptpd three *\n")
    provider.reload()
    again = provider.lookup("alice", "pptpd")
    assert again is not None and again.secret == "two"
    assert provider.lookup("bob", "pptpd") is not None

    os.unlink(path)
    with pytest.raises(ConfigError, match="cannot read"):
        provider.reload()
    assert provider.lookup("bob", "pptpd") is not None


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        PppSecretsFile(tmp_path / "nope")
    assert info.value.path == str(tmp_path / "nope")


def test_latin1_bytes_survive(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"j\xfcrgen srv p\xe4ss\n")
    m = PppSecretsFile(path).lookup("j\xfcrgen", "srv")
    assert m is not None and m.secret.encode("latin-1") == b"p\xe4ss"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab *\"'\\#\n\t-!/.0123456789+@x")), max_size=200))
def test_parser_only_raises_config_error(text: str) -> None:
    try:
        entries = parse_secrets(text, "fuzz")
    except ConfigError as exc:
        assert exc.path == "fuzz" and exc.line is not None and exc.line >= 1
        return
    for entry in entries:
        assert entry.source.startswith("fuzz:")
