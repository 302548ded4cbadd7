"""``pptpkit server --metrics`` in a namespace: a real session, pings through it, and scrapes
over HTTP from inside the server's namespace, parsed with prometheus_client's parser."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import require_root
from netns import NetnsLab
from pptpkit.io.link import LinkDownError
from serverlab import LOCAL_IP, Server, connect, in_ns, ping, run_in, two_namespaces

pytestmark = [pytest.mark.root]

#: Not in the pool (198.51.100.10-20) nor the tunnel's local address: an address of its own on
#: the server namespace's loopback, as a monitoring address would be.
METRICS_IP, METRICS_PORT = "198.51.100.200", 9100
FETCH = ("import sys, urllib.request\n"
         "answer = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
         "sys.stdout.write(answer.headers['Content-Type'] + '\\n' + answer.read().decode())\n")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_root()
    with NetnsLab("pkmet") as lab:
        yield lab


async def scrape(ns: str) -> Samples:
    rc, out = await in_ns(ns, sys.executable, "-c", FETCH, f"http://{METRICS_IP}:{METRICS_PORT}/metrics",
                          timeout=30)
    assert rc == 0, out
    content_type, _, text = out.partition("\n")
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_a_session_and_a_wrong_password(lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = two_namespaces(lab)
    lab.ip(srv, "addr", "add", f"{METRICS_IP}/32", "dev", "lo")
    server = Server(lab, srv, tmp_path, "--metrics", f"{METRICS_IP}:{METRICS_PORT}")
    server.wait_log(f"metrics on http://{METRICS_IP}:{METRICS_PORT}/metrics")

    async def main() -> None:
        idle = await scrape(srv)
        assert value(idle, "pptpkit_sessions_up") == 0
        assert value(idle, "pptpkit_session_setups_total") == 0
        alice = await connect("alice", "alice pw")
        await server.await_log("session up: user 'alice'")
        rc, out = await ping(cli, LOCAL_IP)
        assert rc == 0, out
        up = await scrape(srv)
        assert value(up, "pptpkit_sessions_up") == 1
        assert value(up, "pptpkit_sessions_authenticating") == 0
        assert value(up, "pptpkit_control_connections") == 1
        assert value(up, "pptpkit_session_setups_total") == 1
        assert value(up, "pptpkit_session_setup_seconds_count") == 1
        assert 0 < value(up, "pptpkit_session_setup_seconds_sum") < 15
        # Two echo requests of 84 octets in, their replies out, at least.
        assert value(up, "pptpkit_session_bytes_total", direction="in") >= 168
        assert value(up, "pptpkit_session_bytes_total", direction="out") >= 168
        assert value(up, "pptpkit_session_packets_total", direction="in") >= 2
        assert value(up, "pptpkit_gre_socket_received_packets_total") > 0
        assert value(up, "pptpkit_gre_lost_packets_total") == 0
        await alice.close()
        await server.await_log("session down: user 'alice'")
        after = await scrape(srv)
        assert value(after, "pptpkit_sessions_up") == 0
        assert value(after, "pptpkit_sessions_ended_total", cause="User-Request") == 1
        # The ended session's traffic stays counted: the counters never go down.
        for direction in ("in", "out"):
            assert (value(after, "pptpkit_session_bytes_total", direction=direction)
                    >= value(up, "pptpkit_session_bytes_total", direction=direction))
        assert value(after, "pptpkit_auth_failures_total", method="mschap-v2") == 0
        with pytest.raises(LinkDownError):
            await connect("alice", "not the password")
        await server.await_log("session down: user 'alice'", count=2)
        failed = await scrape(srv)
        assert value(failed, "pptpkit_auth_failures_total", method="mschap-v2") == 1
        assert value(failed, "pptpkit_session_setup_failures_total", reason="User-Error") == 1
        assert value(failed, "pptpkit_session_setups_total") == 2
        assert value(failed, "pptpkit_session_setup_seconds_count") == 1
        assert value(failed, "pptpkit_sessions_up") == 0

    run_in(cli, main)
    server.proc.terminate()
    assert server.proc.wait(10) == 0
    assert "Traceback" not in server.log(), server.log()
