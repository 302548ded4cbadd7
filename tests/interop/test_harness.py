"""Proof that the interop harness works: the real pptpd (and pptp) in sandboxed namespaces."""

from __future__ import annotations

import socket
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    Capture,
    start_pptp,
    start_pptpd,
    start_sandboxed,
    tshark_lines,
    tshark_problems,
)

from conftest import require_binary, require_root
from netns import NetnsLab, inside, pids_in, two_hosts

pytestmark = [pytest.mark.root, pytest.mark.interop]

MAGIC = 0x1A2B3C4D
SERVER, CLIENT = "192.0.2.2", "192.0.2.1"


# -- hand-built RFC 2637 messages (section 2 layouts) ------------------------------------------


def control_header(length: int, ctrl_type: int, *, magic: int = MAGIC) -> bytes:
    # Length, PPTP Message Type 1 (control), Magic Cookie, Control Message Type, Reserved0.
    return struct.pack("!HHIHH", length, 1, magic, ctrl_type, 0)


def sccrq(*, magic: int = MAGIC) -> bytes:
    body = struct.pack("!HHIIHH", 0x0100, 0, 1, 1, 1, 1)  # version 1.0, framing/bearer async/analog
    body += b"pptpkit-test".ljust(64, b"\0") + b"pptpkit".ljust(64, b"\0")
    msg = control_header(156, 1, magic=magic) + body
    assert len(msg) == 156
    return msg


def ocrq(call_id: int, serial: int) -> bytes:
    body = struct.pack("!HHIIIIHHHH", call_id, serial, 300, 100_000_000, 3, 3, 64, 0, 0, 0)
    body += b"\0" * 64 + b"\0" * 64
    msg = control_header(168, 7) + body
    assert len(msg) == 168
    return msg


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


# -- async HDLC (RFC 1662), just enough to talk through the real peers --------------------------


def fcs16(data: bytes) -> int:
    fcs = 0xFFFF
    for b in data:
        fcs ^= b
        for _ in range(8):
            fcs = (fcs >> 1) ^ 0x8408 if fcs & 1 else fcs >> 1
    return fcs ^ 0xFFFF


def hdlc_encode(frame: bytes) -> bytes:
    raw = frame + struct.pack("<H", fcs16(frame))
    out = bytearray(b"\x7e")
    for b in raw:
        if b < 0x20 or b in (0x7D, 0x7E):
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    return bytes(out + b"\x7e")


def hdlc_frames(stream: bytes) -> list[bytes]:
    """Unescaped frames with a good FCS (FCS stripped)."""
    frames = []
    for chunk in stream.split(b"\x7e"):
        raw = bytearray()
        esc = False
        for b in chunk:
            if b == 0x7D:
                esc = True
            elif esc:
                raw.append(b ^ 0x20)
                esc = False
            else:
                raw.append(b)
        if len(raw) >= 4 and fcs16(bytes(raw[:-2])) == struct.unpack("<H", raw[-2:])[0]:
            frames.append(bytes(raw[:-2]))
    return frames


LCP_FROM_SERVER = bytes.fromhex("ff03c021" "01110004")  # Configure-Request id 0x11, no options
LCP_FROM_CLIENT = bytes.fromhex("ff03c021" "01220004")  # Configure-Request id 0x22


def write_ppp_script(path: Path, workdir: Path) -> Path:
    """The program pptpd runs instead of pppd: records argv, speaks first, records what it hears."""
    first = "".join(f"\\{b:03o}" for b in hdlc_encode(LCP_FROM_SERVER))
    path.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {workdir}/ppp.argv\n'
        "stty raw -echo\n"  # pptpctrl hands over a cooked pty; PPP needs raw bytes
        f"printf '{first}'\n"
        f"exec cat > {workdir}/ppp.received\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    for binary in ("pptpd", "pptpctrl", "pptp", "busybox", "dumpcap", "tshark", "unshare", "stty"):
        require_binary(binary)
    with two_hosts("pkio", SERVER, CLIENT) as lab:
        yield lab


def _wait_file(path: Path, timeout: float = 10.0, *, min_size: int = 1) -> bytes:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size >= min_size:
            return path.read_bytes()
        time.sleep(0.05)
    raise AssertionError(f"{path} not written in {timeout}s")


def test_pptpd_answers_sccrq_and_ocrq(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    script = write_ppp_script(tmp_path / "ppp-prog", tmp_path)
    pcap = tmp_path / "pptpd.pcapng"
    with Capture(server_ns, "srv0", pcap):
        pptpd = start_pptpd(server_ns, tmp_path, ppp_program=script, listen=SERVER)
        try:
            with inside(client_ns):
                sock = socket.create_connection((SERVER, 1723), timeout=10)
                # Open before the call exists: GRE to a host without a GRE listener draws an
                # ICMP protocol-unreachable, and pptpctrl hangs up on that.
                gre = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
            with sock, gre:
                sock.sendall(sccrq())
                reply = recv_exact(sock, 156)
                length, msg_type, magic, ctrl_type = struct.unpack_from("!HHIH", reply)
                assert (length, msg_type, magic, ctrl_type) == (156, 1, MAGIC, 2)
                version, result = struct.unpack_from("!HB", reply, 12)
                assert (version, result) == (0x0100, 1)  # version 1.0, "successful channel setup"
                assert reply[92:156].rstrip(b"\0") == b"linux"  # vendor name (INTEROP facts)

                sock.sendall(ocrq(call_id=0x4242, serial=7))
                ocrp = recv_exact(sock, 32)
                length, _, magic, ctrl_type = struct.unpack_from("!HHIH", ocrp)
                assert (length, magic, ctrl_type) == (32, MAGIC, 8)
                _, peer_id, out_result = struct.unpack_from("!HHB", ocrp, 12)
                assert peer_id == 0x4242 and out_result == 1

                # pptpctrl opened a pty in the sandbox's devpts and started our PPP program.
                argv = _wait_file(tmp_path / "ppp.argv").decode().split("\n")
                assert argv[:4] == ["local", "115200", "198.51.100.1:198.51.100.2", "remotenumber"]
                assert argv[4] == CLIENT
                # The program spoke first; its frame arrives as enhanced GRE for our call ID.
                gre.settimeout(10)
                data = gre.recv(2000)
                ihl = (data[0] & 0xF) * 4
                assert data[ihl + 1] & 7 == 1
                assert struct.unpack_from("!H", data, ihl + 6)[0] == 0x4242
            pptpd.wait_for_syslog(r"pptpd\[\d+\]: CTRL: Client 192\.0\.2\.1 control connection started")
            pptpd.wait_for_syslog(r"CTRL: Starting call")
            # We hung up (closed TCP): pptpctrl notices, reaps the PPP program and says so.
            pptpd.wait_for_syslog(r"CTRL: Reaping child PPP")
            pptpd.wait_for_syslog(r"CTRL: Client 192\.0\.2\.1 control connection finished")
        finally:
            pptpd.stop()
    assert not pptpd.running
    assert pids_in(server_ns) == []

    assert tshark_problems(pcap) == []
    # The capture is not vacuously clean: it holds the exchange we made.
    types = tshark_lines(pcap, "pptp", fields=["pptp.control_message_type"])
    assert types[:4] == ["1", "2", "7", "8"]
    calls = tshark_lines(pcap, "gre", fields=["gre.key.call_id"])
    assert calls and set(calls) == {str(0x4242)}
    assert netlab.namespaces == [server_ns, client_ns]


def test_tshark_flags_a_wrong_magic_cookie(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    _, server_ns, client_ns = lab
    pcap = tmp_path / "bad.pcapng"
    with Capture(client_ns, "cli0", pcap):
        with inside(client_ns):
            listener = socket.create_server((CLIENT, 1723))
        with inside(server_ns):
            sock = socket.create_connection((CLIENT, 1723), timeout=5)
        conn, _ = listener.accept()
        with listener, sock, conn:
            sock.sendall(sccrq(magic=0xDEADBEEF))
            assert recv_exact(conn, 156)[4:8] == b"\xde\xad\xbe\xef"
    problems = tshark_problems(pcap)
    assert len(problems) == 1 and "PPTP" in problems[0], problems


def test_pptp_client_and_pptpd_exchange_frames(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    """The two real peers against each other, PPP frames injected and read on both ends."""
    _, server_ns, client_ns = lab
    script = write_ppp_script(tmp_path / "ppp-prog", tmp_path)
    pcap = tmp_path / "both.pcapng"
    with Capture(client_ns, "cli0", pcap):
        pptpd = start_pptpd(server_ns, tmp_path, ppp_program=script, listen=SERVER)
        ours, theirs = socket.socketpair()
        try:
            pptp = start_pptp(client_ns, tmp_path, SERVER, stdin=theirs.fileno())
            theirs.close()
            try:
                ours.settimeout(15)
                got = b""
                while LCP_FROM_SERVER not in hdlc_frames(got):
                    chunk = ours.recv(4096)
                    assert chunk, pptp.output()
                    got += chunk
                ours.sendall(hdlc_encode(LCP_FROM_CLIENT))
                end = time.monotonic() + 10
                received = b""
                while LCP_FROM_CLIENT not in hdlc_frames(received) and time.monotonic() < end:
                    received = _wait_file(tmp_path / "ppp.received")
                    time.sleep(0.05)
                assert LCP_FROM_CLIENT in hdlc_frames(received), received
                # pptp logged through the sandbox's /dev/log as well.
                assert "Outgoing call established" in pptp.syslog()
            finally:
                ours.close()  # EOF on pptp's fd 0: it hangs up the call and exits
                pptp.stop()
        finally:
            pptpd.stop()
    assert pids_in(client_ns) == [] and pids_in(server_ns) == []
    assert tshark_problems(pcap) == []
    assert tshark_lines(pcap, "pptp.control_message_type == 7")  # pptp's OCRQ
    assert len(tshark_lines(pcap, "gre && ppp")) >= 2


def test_sandbox_without_pid_namespace_and_own_devpts(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, _ = lab
    box = start_sandboxed(
        server_ns,
        ["sh", "-c", "logger -t pkcheck ready; ls /dev/pts; exec sleep 30"],
        workdir=tmp_path, name="plain", pid_namespace=False,
    )
    netlab.track(box.proc)
    box.wait_for_syslog(r"pkcheck: ready")
    assert box.running
    assert box.stop() is not None
    assert not box.running
    # Only the fresh devpts instance's ptmx: no host ptys are visible in the sandbox.
    assert box.output().split() == ["ptmx"]
