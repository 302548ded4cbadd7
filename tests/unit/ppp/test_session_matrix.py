"""Every auth method x MPPE setting x who requires MPPE, end to end between two sessions."""

from __future__ import annotations

import itertools

import pytest
from session_harness import SessionPair, client_config, ipv4_packet, server_config

from pptpkit.auth.methods import AuthMethod
from pptpkit.ppp.session_config import LinkDown, LinkUp, MppePolicy, Outcome, Phase

METHODS = [AuthMethod.PAP, AuthMethod.CHAP_MD5, AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2, AuthMethod.EAP]
KEYED = {AuthMethod.MSCHAP_V1, AuthMethod.MSCHAP_V2, AuthMethod.EAP}
#: (key bits, stateful) or None for nomppe.
MPPE_SPECS: list[tuple[int, bool] | None] = [None] + [
    (bits, stateful) for bits in (40, 56, 128) for stateful in (False, True)
]
REQUIRERS = ["neither", "client", "server", "both"]


def policy(spec: tuple[int, bool] | None, required: bool) -> MppePolicy:
    if spec is None:
        # A side that requires MPPE with no key length given uses pppd's default set.
        return MppePolicy(required=True) if required else MppePolicy.nomppe()
    bits, stateful = spec
    return MppePolicy(
        bits_40=bits == 40, bits_56=bits == 56, bits_128=bits == 128, stateful=stateful, required=required
    )


def expectation(
    method: AuthMethod, spec: tuple[int, bool] | None, requirer: str
) -> tuple[str | None, dict[str, tuple[Outcome, str]]]:
    """(MPPE text of a link that comes up, or None) and the failure per side otherwise."""
    req = {"client": requirer in ("client", "both"), "server": requirer in ("server", "both")}
    if method not in KEYED:
        if not any(req.values()):
            return "none", {}
        fail = {side: (Outcome.MPPE_REFUSED, "MPPE required but not available") for side in req if req[side]}
        for side in req:
            fail.setdefault(side, (Outcome.PEER_TERMINATED, "MPPE required but not available"))
        return None, fail
    if spec is not None:
        bits, stateful = spec
        return f"MPPE {bits}-bit {'stateful' if stateful else 'stateless'}", {}
    if requirer == "neither":
        return "none", {}
    if requirer == "both":
        return "MPPE 128-bit stateless", {}
    other = "server" if requirer == "client" else "client"
    return None, {
        requirer: (Outcome.MPPE_REFUSED, "MPPE required but peer refused"),
        other: (Outcome.PEER_TERMINATED, "MPPE required but peer refused"),
    }


CASES = list(itertools.product(METHODS, MPPE_SPECS, REQUIRERS))


def _id(case: tuple[AuthMethod, tuple[int, bool] | None, str]) -> str:
    method, spec, requirer = case
    mppe = "nomppe" if spec is None else f"{spec[0]}{'sf' if spec[1] else 'sl'}"
    return f"{method.name}-{mppe}-req_{requirer}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_pairing(case: tuple[AuthMethod, tuple[int, bool] | None, str]) -> None:
    method, spec, requirer = case
    pair = SessionPair(
        client_config(mppe=policy(spec, requirer in ("client", "both"))),
        server_config(method, mppe=policy(spec, requirer in ("server", "both"))),
    )
    pair.start()
    pair.run(until=8.0)
    mppe, failures = expectation(method, spec, requirer)
    if mppe is not None:
        for side in ("client", "server"):
            up = pair.link_up(side)
            assert isinstance(up, LinkUp), f"{side} never came up: {pair.events[side]}"
            assert up.mppe == mppe
            assert up.auth_method is method
            assert up.username == "alice"
            assert pair.link_down(side) is None
            assert pair.session(side).phase is Phase.NETWORK
        # Data both ways, byte-exact, and never in clear when MPPE is on.
        out = [ipv4_packet(i, 40 + 8 * i) for i in range(5)]
        back = [ipv4_packet(100 + i, 1400) for i in range(3)]
        for p in out:
            assert pair.send("client", p) is not None
        for p in back:
            assert pair.send("server", p) is not None
        pair.pump()
        assert pair.wires["cs"].delivered == out
        assert pair.wires["sc"].delivered == back
        data_frames = pair.wires["cs"].frames[-len(out) :] + pair.wires["sc"].frames[-len(back) :]
        expected_protocol = 0xFD if mppe != "none" else 0x21
        assert all(f[0] == expected_protocol for f in data_frames)  # ACFC+PFC were agreed
        return
    pair.run(until=30.0)
    for side, (outcome, reason) in failures.items():
        down = pair.link_down(side)
        assert isinstance(down, LinkDown), f"{side} did not end: {pair.events[side]}"
        assert down.outcome is outcome, (side, down)
        assert down.reason == reason
        assert down.exit_status == (10 if outcome is Outcome.MPPE_REFUSED else 0)
        assert pair.link_up(side) is None
        assert pair.session(side).phase is Phase.DEAD
    # Nothing but control traffic ever crossed the wire.
    for wire in pair.wires.values():
        assert not wire.delivered
        assert all(f[0] not in (0x21, 0xFD) for f in wire.frames)
