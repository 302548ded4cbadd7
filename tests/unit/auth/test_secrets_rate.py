"""The ``rate=DOWN[/UP]`` word of a secrets entry and the rate syntax shared with ``--shaper``."""

from __future__ import annotations

import pytest

from pptpkit.auth.secrets import RateLimit, StaticSecrets, parse_rate
from pptpkit.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "down", "up"),
    [
        ("1024", 1024, 1024),
        ("1024/512", 1024, 512),
        ("4M/2M", 4000, 2000),
        ("10m/512k", 10000, 512),
        ("1.5M", 1500, 1500),
        ("1G/0", 1000_000, 0),
        ("0/256K", 0, 256),
    ],
)
def test_parse_rate(text: str, down: int, up: int) -> None:
    assert parse_rate(text) == RateLimit(down, up)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "bad rate ''"),
        ("fast", "bad rate 'fast'"),
        ("4M/", "bad rate ''"),
        ("/4M", "bad rate ''"),
        ("-1", "bad rate '-1'"),
        ("4T", "bad rate '4T'"),
        ("inf", "bad rate 'inf'"),
        ("0/0", "limits nothing"),
        ("101G", "above 100 Gbit/s"),
        ("0.1", "below 1 kbit/s"),
    ],
)
def test_parse_rate_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rate(text)


def test_rate_word_in_an_entry() -> None:
    secrets = StaticSecrets.from_text(
        'alice pptpd "alice pw" * rate=4M/2M\n'
        "bob pptpd bobpw 198.51.100.50 rate=512\n"
        "carol pptpd pw 198.51.100.51\n", "chap-secrets")
    alice = secrets.lookup("alice", "pptpd")
    assert alice is not None and alice.rate == RateLimit(4000, 2000) and alice.addresses.allows_any
    bob = secrets.lookup("bob", "pptpd")
    assert bob is not None and bob.rate == RateLimit(512, 512)
    # The rate word is no address: bob's list is still his one address.
    assert bob.addresses.permits("198.51.100.50") and not bob.addresses.permits("198.51.100.51")
    carol = secrets.lookup("carol", "pptpd")
    assert carol is not None and carol.rate is None
    assert str(alice.rate) == "4000/2000 kbit/s" and str(RateLimit(0, 64)) == "-/64 kbit/s"


def test_rate_word_before_the_options() -> None:
    secrets = StaticSecrets.from_text("dave * pw 198.51.100.52 rate=1M -- rate=9M\n")
    dave = secrets.lookup("dave", "x")
    assert dave is not None and dave.rate == RateLimit(1000, 1000) and dave.options == ("rate=9M",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice * pw * rate=fast\n", r"chap-secrets:2: bad rate 'fast'"),
        ("alice * pw * rate=1M rate=2M\n", r"chap-secrets:2: a second 'rate=2M': one rate per entry"),
        ("alice * pw * rate=\n", r"chap-secrets:2: bad rate ''"),
        ("alice * pw * rate=0\n", r"chap-secrets:2: rate '0' limits nothing"),
    ],
)
def test_bad_rate_words(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StaticSecrets.from_text("bob * pw *\n" + line, "chap-secrets")
