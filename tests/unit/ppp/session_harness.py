"""Two PppSessions back to back on a virtual clock, with a seeded lossy wire between them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from pptpkit.auth.base import AuthenticatorConfig, PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import LinkDown, LinkUp, MppePolicy, SessionConfig, SessionRole

SERVER_NAME = "pptpd"
USER = "alice"
PASSWORD = "s3cret-Pa55"
SERVER_ADDRESS = IPv4Address("198.51.100.1")
CLIENT_ADDRESS = IPv4Address("198.51.100.2")
DNS = (IPv4Address("203.0.113.53"), IPv4Address("203.0.113.54"))

Tamper = Callable[[str, bytes], bytes | None]


def counter_source(seed: int) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: rng.getrandbits(32)


def bytes_source(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def id_source(seed: int) -> Callable[[], bytes]:
    rng = random.Random(seed)
    return lambda: rng.randbytes(8)


def server_config(
    method: AuthMethod | None = AuthMethod.MSCHAP_V2,
    *,
    mppe: MppePolicy | None = None,
    secrets: StaticSecrets | None = None,
    **overrides: Any,
) -> SessionConfig:
    policy = AuthPolicy(require=frozenset({method})) if method is not None else AuthPolicy()
    authenticator = AuthenticatorConfig(
        name=SERVER_NAME,
        secrets=secrets or StaticSecrets({(USER, SERVER_NAME): PASSWORD}),
        random=bytes_source(1),
    )
    kwargs: dict[str, Any] = dict(
        role=SessionRole.SERVER,
        auth_policy=policy,
        authenticator=authenticator,
        local_address=SERVER_ADDRESS,
        peer_address=CLIENT_ADDRESS,
        dns_servers=DNS,
        magic_source=counter_source(2),
        ipv6_id_source=id_source(3),
        mppe=mppe or MppePolicy(),
    )
    kwargs.update(overrides)
    return SessionConfig(**kwargs)


def client_config(
    *, password: str = PASSWORD, username: str = USER, mppe: MppePolicy | None = None, **overrides: Any
) -> SessionConfig:
    kwargs: dict[str, Any] = dict(
        role=SessionRole.CLIENT,
        peer=PeerConfig(username=username, password=password, random=bytes_source(4)),
        request_dns=True,
        magic_source=counter_source(5),
        ipv6_id_source=id_source(6),
        mppe=mppe or MppePolicy(),
    )
    kwargs.update(overrides)
    return SessionConfig(**kwargs)


@dataclass
class Wire:
    """What travelled in one direction: every frame sent (before loss) and IP packets delivered."""

    frames: list[bytes] = field(default_factory=list)
    in_flight: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)


class SessionPair:
    """``client`` and ``server`` joined by a wire ("cs": client to server, "sc": back).

    ``loss``/``duplicate``/``reorder`` are probabilities applied per frame under ``seed``;
    ``tamper(direction, frame)`` may rewrite or (returning None) drop a frame.  ``lossy_data_only``
    keeps control frames intact so that tests about data loss stay about data loss.
    """

    def __init__(
        self,
        client: SessionConfig,
        server: SessionConfig,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int = 0,
        tamper: Tamper | None = None,
        lossy_data_only: bool = False,
    ) -> None:
        self.now = 0.0
        self.client = PppSession(client, self.now)
        self.server = PppSession(server, self.now)
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self.lossy_data_only = lossy_data_only
        self.tamper = tamper
        self.wires = {"cs": Wire(), "sc": Wire()}
        self.events: dict[str, list[object]] = {"client": [], "server": []}
        self.silent: set[str] = set()

    def session(self, side: str) -> PppSession:
        return self.client if side == "client" else self.server

    def start(self) -> None:
        self.server.open(self.now)
        self.client.open(self.now)
        self.pump()

    def _transmit(self, direction: str, frame: bytes, *, data: bool) -> None:
        wire = self.wires[direction]
        wire.frames.append(frame)
        if self.tamper is not None:
            tampered = self.tamper(direction, frame)
            if tampered is None:
                return
            frame = tampered
        lossy = data or not self.lossy_data_only
        if lossy and self.loss and self.rng.random() < self.loss:
            return
        wire.in_flight.append(frame)
        if lossy and self.duplicate and self.rng.random() < self.duplicate:
            wire.in_flight.append(frame)

    def send(self, side: str, packet: bytes) -> bytes | None:
        """Hand ``packet`` to ``side``'s data plane; the frame (or None) it produced."""
        frame = self.session(side).send_packet(packet, self.now)
        if frame is not None:
            self._transmit("cs" if side == "client" else "sc", frame, data=True)
        return frame

    def pump(self, rounds: int = 500) -> None:
        for _ in range(rounds):
            moved = False
            for direction, src_name, src, dst in (
                ("cs", "client", self.client, self.server),
                ("sc", "server", self.server, self.client),
            ):
                for frame in src.frames_to_send():
                    if src_name not in self.silent:
                        self._transmit(direction, frame, data=False)
                wire = self.wires[direction]
                batch, wire.in_flight = wire.in_flight, []
                if self.reorder and len(batch) > 1:
                    for i in range(len(batch) - 1):
                        if self.rng.random() < self.reorder:
                            batch[i], batch[i + 1] = batch[i + 1], batch[i]
                for frame in batch:
                    moved = True
                    packet = dst.receive_frame(frame, self.now)
                    if packet is not None:
                        wire.delivered.append(packet)
            self._drain()
            if not moved and not self.client._out and not self.server._out:
                return
        raise AssertionError("sessions never went quiet")

    def _drain(self) -> None:
        for name in ("client", "server"):
            session = self.session(name)
            while (event := session.next_event()) is not None:
                self.events[name].append(event)

    def run(self, until: float) -> None:
        """Pump and fire timers in time order until virtual time ``until``."""
        self.pump()
        while True:
            timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                break
            self.now = max(self.now, min(timers))
            for session in (self.client, self.server):
                t = session.get_timer()
                if t is not None and t <= self.now:
                    session.handle_timer(self.now)
            self.pump()
        self.now = max(self.now, until)

    def of_type(self, side: str, cls: type) -> list[Any]:
        return [e for e in self.events[side] if isinstance(e, cls)]

    def link_up(self, side: str) -> LinkUp | None:
        ups = self.of_type(side, LinkUp)
        return ups[-1] if ups else None

    def link_down(self, side: str) -> LinkDown | None:
        downs = self.of_type(side, LinkDown)
        assert len(downs) <= 1, f"{side} reported LinkDown {len(downs)} times"
        return downs[0] if downs else None


def ipv4_packet(n: int, size: int = 60) -> bytes:
    """A recognisable IPv4-looking packet (version nibble 4); the session does not parse more."""
    body = n.to_bytes(4, "big") * (size // 4)
    return bytes((0x45, 0)) + size.to_bytes(2, "big") + body[: size - 4]


def ipv6_packet(n: int, size: int = 80) -> bytes:
    body = n.to_bytes(4, "big") * (size // 4)
    return bytes((0x60, 0, 0, 0)) + body[: size - 4]
