"""Our PPTP layer against the real pptp-linux client and the real pptpd server.

a. ``pptp SERVER --nolaunchpppd`` (fd 0 a socketpair end) against ``pptpkit server``;
b. ``pptpkit pty`` against ``pptpd``;
each with a recording PPP program on the server side (it speaks first, records what it reads,
echoes it, and exits on a QUIT frame), frames checked byte for byte in both directions, a
dumpcap capture that Wireshark must find clean, and teardown from either side leaving nothing.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Capture, start_pptp, start_pptpd, tshark_lines, tshark_problems

from conftest import require_binary, require_root
from netns import NetnsLab, inside, pids_in, two_hosts
from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame

pytestmark = [pytest.mark.root, pytest.mark.interop]

SERVER, CLIENT = "192.0.2.2", "192.0.2.1"
GREETING = b"\xff\x03\xc0\x21\x01\x11\x00\x04"  # LCP Configure-Request id 0x11
QUIT = b"\xff\x03\xc0\x21\x09\x63\x00\x0c\0\0\0\0QUIT"  # an LCP Echo-Request too


def write_program(path: Path, outdir: Path) -> Path:
    """The per-call PPP program: raw mode (pptpd hands over a cooked pty), argv logged, the
    greeting sent first (pptpctrl reads no GRE before the program spoke), input recorded and
    echoed, exit on QUIT."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f'''
        import os, sys, termios
        from pptpkit.io.pty import set_raw
        from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame
        if os.isatty(0):
            set_raw(0)
        out = {str(outdir)!r}
        with open(out + "/argv", "w") as f:
            f.write("\\n".join(sys.argv[1:]))
        os.write(1, encode_frame({GREETING!r}))
        dec = HdlcDecoder(max_frame=65535)
        rec = open(out + "/received", "ab", buffering=0)
        while True:
            try:
                data = os.read(0, 65536)
            except OSError:
                break
            if not data:
                break
            rec.write(data)
            frames = dec.feed(data)
            if {QUIT!r} in frames:
                sys.exit(0)
            if frames:
                os.write(1, b"".join(encode_frame(f) for f in frames))
    '''))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def recorded(outdir: Path) -> list[bytes]:
    path = outdir / "received"
    return HdlcDecoder(max_frame=65535).feed(path.read_bytes()) if path.exists() else []


def read_frames(fd: int, n: int, timeout: float = 15.0) -> list[bytes]:
    dec = HdlcDecoder(max_frame=65535)
    frames: list[bytes] = []
    end = time.monotonic() + timeout
    while len(frames) < n:
        left = end - time.monotonic()
        assert left > 0, f"only {len(frames)} of {n} frames: {frames}"
        if not select.select([fd], [], [], left)[0]:
            continue
        data = os.read(fd, 65536)
        assert data, f"EOF after {len(frames)} of {n} frames"
        frames += dec.feed(data)
    return frames


def wait_eof(fd: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        assert left > 0, "no EOF"
        if select.select([fd], [], [], left)[0]:
            try:
                if not os.read(fd, 65536):
                    return
            except ConnectionResetError:
                return


def wait_until(cond: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def frames_for(tag: int, n: int) -> list[bytes]:
    """Well-formed LCP Echo-Requests (so Wireshark's dissectors have nothing to flag), whose
    data holds all 256 octet values across the set: escaping by pptp/pptpctrl and by us must
    agree."""
    out = []
    for i in range(n):
        data = bytes([tag, i]) + bytes(range(256))[i * 16 : i * 16 + 64]
        lcp = bytes([9, i + 1]) + (8 + len(data)).to_bytes(2, "big") + b"\0\0\0\0" + data
        out.append(b"\xff\x03\xc0\x21" + lcp)
    return out


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    for binary in ("pptpd", "pptpctrl", "pptp", "busybox", "dumpcap", "tshark", "unshare"):
        require_binary(binary)
    with two_hosts("pkpi", SERVER, CLIENT) as lab:
        yield lab


def start_our_server(netlab: NetnsLab, ns: str, program: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = netlab.popen(ns, [
            sys.executable, "-m", "pptpkit", "server", "-v", "--listen", SERVER,
            "--ppp-program", str(program),
            "--localip", "198.51.100.1", "--remoteip", "198.51.100.2-9", "--noipparam",
        ], stdout=subprocess.DEVNULL, stderr=out)
    end = time.monotonic() + 10
    while True:
        with inside(ns):
            table = Path("/proc/thread-self/net/tcp").read_text()
        rows = [line.split() for line in table.splitlines()[1:]]
        if any(row[3] == "0A" and row[1].endswith(":06BB") for row in rows):
            return proc
        assert proc.poll() is None and time.monotonic() < end, log.read_text()
        time.sleep(0.05)


def our_pids(ns: str) -> list[int]:
    return [p for p in pids_in(ns) if p != os.getpid()]


# -- a. the real pptp client against our server -----------------------------------------------------


@pytest.mark.parametrize("hangup", ["client", "server"])
def test_pptp_linux_against_our_server(lab: tuple[NetnsLab, str, str], tmp_path: Path, hangup: str) -> None:
    netlab, server_ns, client_ns = lab
    outdir = tmp_path / "prog"
    outdir.mkdir()
    program = write_program(tmp_path / "ppp-prog", outdir)
    log = tmp_path / "server.log"
    pcap = tmp_path / "a.pcapng"
    server = start_our_server(netlab, server_ns, program, log)
    with Capture(client_ns, "cli0", pcap):
        ours, theirs = socket.socketpair()
        pptp = start_pptp(client_ns, tmp_path, SERVER, stdin=theirs.fileno())
        theirs.close()
        try:
            # Our server's program spoke first; pptp hands the frame to its fd 0 byte-exact.
            assert read_frames(ours.fileno(), 1) == [GREETING]
            sent = frames_for(1, 12)
            for frame in sent:
                ours.sendall(encode_frame(frame))
            assert read_frames(ours.fileno(), 12) == sent  # echoed back through both
            wait_until(lambda: recorded(outdir) == sent, 5, "the program to record every frame")
            argv = (outdir / "argv").read_text().split("\n")
            assert argv == ["local", "115200", "198.51.100.1:198.51.100.2", "remotenumber", CLIENT]
            assert "Outgoing call established" in pptp.syslog()
            if hangup == "client":
                ours.close()  # EOF on pptp's fd 0: Call-Clear-Request, TCP closed
                wait_until(lambda: not pptp.running, 10, "pptp to exit")
                wait_until(lambda: "call" in log.read_text() and "cleared" in log.read_text(), 10,
                           "our server to clear the call")
            else:
                ours.sendall(encode_frame(QUIT))  # the program exits: we clear the call
                wait_eof(ours.fileno())  # pptp was told (Call-Disconnect-Notify) and let go of fd 0
                ours.close()
                wait_until(lambda: "PPP program" in log.read_text(), 10, "the program to be reaped")
        finally:
            ours.close()
            pptp.stop()
    server.send_signal(15)
    assert server.wait(10) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and "protocol violation" not in text, text
    assert our_pids(client_ns) == [] and our_pids(server_ns) == []
    assert tshark_problems(pcap) == []
    # Not vacuous: the capture holds the control exchange and data both ways.
    assert tshark_lines(pcap, "pptp.control_message_type == 7")
    assert tshark_lines(pcap, "pptp.control_message_type == 8")
    assert len(tshark_lines(pcap, "gre && ppp && ip.src == 192.0.2.1")) >= 12
    assert len(tshark_lines(pcap, "gre && ppp && ip.src == 192.0.2.2")) >= 13
    if hangup == "client":
        assert tshark_lines(pcap, "pptp.control_message_type == 12")  # Call-Clear-Request
    else:
        assert tshark_lines(pcap, "pptp.control_message_type == 13")  # Call-Disconnect-Notify


# -- b. our client against the real pptpd -----------------------------------------------------------


@pytest.mark.parametrize("hangup", ["client", "server"])
def test_pptpkit_pty_against_pptpd(lab: tuple[NetnsLab, str, str], tmp_path: Path, hangup: str) -> None:
    netlab, server_ns, client_ns = lab
    outdir = tmp_path / "prog"
    outdir.mkdir()
    program = write_program(tmp_path / "ppp-prog", outdir)
    pcap = tmp_path / "b.pcapng"
    with Capture(server_ns, "srv0", pcap):
        pptpd = start_pptpd(server_ns, tmp_path, ppp_program=program, listen=SERVER)
        try:
            client = netlab.popen(client_ns, [
                sys.executable, "-m", "pptpkit", "pty", SERVER, "--timeout", "5", "--summary",
            ], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert client.stdin is not None and client.stdout is not None and client.stderr is not None
            assert read_frames(client.stdout.fileno(), 1) == [GREETING]
            sent = frames_for(2, 12)
            client.stdin.write(b"".join(encode_frame(f) for f in sent))
            client.stdin.flush()
            assert read_frames(client.stdout.fileno(), 12) == sent
            wait_until(lambda: recorded(outdir) == sent, 5, "the program to record every frame")
            assert (outdir / "argv").read_text().split("\n") == [
                "local", "115200", "198.51.100.1:198.51.100.2", "remotenumber", CLIENT]
            if hangup == "client":
                client.stdin.close()
                assert client.wait(10) == 0
                pptpd.wait_for_syslog(r"CTRL: Reaping child PPP")
            else:
                client.stdin.write(encode_frame(QUIT))
                client.stdin.flush()
                status = client.wait(15)
                # pptpctrl ends the whole control connection when its PPP program exits.
                assert status == 16, status  # hang-up: the call cleared or the connection closed
            err = client.stderr.read().decode()
            assert "Traceback" not in err, err
            assert "pptpkit-summary" in err, err
            if hangup == "server":
                assert "the server cleared the call" in err or "control connection to" in err, err
            pptpd.wait_for_syslog(r"CTRL: Client 192\.0\.2\.1 control connection finished")
        finally:
            pptpd.stop()
    assert our_pids(client_ns) == [] and our_pids(server_ns) == []
    assert "GRE: Bad checksum" not in pptpd.syslog()
    assert tshark_problems(pcap) == []
    assert tshark_lines(pcap, "pptp.control_message_type == 1")  # our SCCRQ
    assert len(tshark_lines(pcap, "gre && ppp && ip.src == 192.0.2.1")) >= 12
