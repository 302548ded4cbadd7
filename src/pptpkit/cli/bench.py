"""``pptpkit bench throughput|setup|scale|soak``: the benchmarks, printed as a table or JSON."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from pptpkit.cli.common import exit_help, not_permitted

__all__ = ["add_bench_parser", "run_bench_command"]


def _positive(kind: type[Any]) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def add_bench_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    bench = sub.add_parser(
        "bench", parents=[common], help="benchmarks: throughput, setup, scale, soak (needs root)",
        description="Benchmarks in two fresh network namespaces joined by a veth pair (TEST-NET "
                    "addresses), removed afterwards.  Prints a table, or JSON with --json.",
        epilog=exit_help("bench"), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    common_b = argparse.ArgumentParser(add_help=False)
    common_b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common_b.add_argument("--repeat", type=_positive(int), default=1, metavar="N",
                          help="repeat each measurement N times; report median, min, max")
    common_b.add_argument("--short", action="store_true",
                          help="a quick run (a few seconds, a few hundred sessions; what CI runs)")
    common_b.add_argument("--mppe", choices=("stateless", "stateful", "none"), default="stateless",
                          help="MPPE mode for setup/scale (default stateless)")

    tp = kinds.add_parser("throughput", parents=[common_b],
                          help="TCP through one tunnel vs the raw veth and the pptp-linux/pptpd relays")
    tp.add_argument("--seconds", type=_positive(float), default=5.0, metavar="S",
                    help="seconds per transfer (default 5)")
    tp.add_argument("--modes", default="stateless,stateful,none", metavar="LIST",
                    help="MPPE modes to run (default stateless,stateful,none)")
    tp.add_argument("--no-relay", action="store_true", help="skip the pptp-linux/pptpd anchor")
    tp.add_argument("--profile", metavar="DIR", help="write cProfile files of both agents to DIR")
    tp.add_argument("--offload", metavar="LIST", default=None,
                    help="TUN offloads for the tunnel runs: on, off or both side by side "
                         "(default on,off; on with --short)")
    tp.add_argument("--pure", action="store_true",
                    help="also run every tunnel measurement on the pure-Python per-packet path "
                         "(PPTPKIT_PURE=1), alternating with the compiled one, and compare them")

    st = kinds.add_parser("setup", parents=[common_b],
                          help="TCP connect -> IPCP up time, and setups per second")
    st.add_argument("--sessions", type=_positive(int), default=200, metavar="N",
                    help="sequential sessions for median/p99 (default 200)")
    st.add_argument("--concurrent", type=_positive(int), default=100, metavar="N",
                    help="clients connecting at once for setups/s (default 100)")
    st.add_argument("--commands", type=_non_negative, default=10, metavar="N",
                    help="also start the real 'pptpkit connect --json' N times against 'pptpkit "
                         "server' and time process start -> up and TCP connect -> IPCP up "
                         "(default 10, 3 with --short; 0 = skip)")
    st.add_argument("--vm", action="store_true",
                    help="the same runs of 'pptpkit connect' against the real pptpd in the VM of "
                         "tools/vm, which must be running (tools/vm/pkvm up && tools/vm/pkvm server)")

    sc = kinds.add_parser("scale", parents=[common_b],
                          help="N concurrent sessions on one server process")
    sc.add_argument("--sessions", type=_positive(int), default=10000, metavar="N",
                    help="concurrent sessions (default 10000)")
    sc.add_argument("--hold", type=_positive(float), default=15.0, metavar="S",
                    help="seconds to hold them with keepalives running (default 15)")
    sc.add_argument("--echo-interval", type=_positive(float), default=10.0, metavar="S",
                    help="LCP and PPTP echo interval during the hold (default 10)")
    sc.add_argument("--parallel", type=_positive(int), default=100, metavar="N",
                    help="setups in flight at once while opening (default 100)")

    sk = kinds.add_parser("soak", parents=[common_b],
                          help="N sessions for M minutes through GRE loss, the real server restarted "
                               "midway, a hostile peer flooding")
    sk.add_argument("--sessions", type=_positive(int), default=500, metavar="N",
                    help="library sessions in one client process (default 500; 20 with --short)")
    sk.add_argument("--minutes", type=_positive(float), default=10.0, metavar="M",
                    help="length of the soak after the sessions are up (default 10; 0.75 with --short)")
    sk.add_argument("--loss", type=float, default=5.0, metavar="PCT",
                    help="GRE loss on the path, each direction, in %% (default 5)")
    sk.add_argument("--persist-clients", type=_non_negative, default=4, metavar="N",
                    help="real 'pptpkit connect --persist' processes besides (default 4; 2 with --short)")
    sk.add_argument("--probe-interval", type=_positive(float), default=2.0, metavar="S",
                    help="seconds between two pings through each session (default 2)")
    sk.add_argument("--flood-rate", type=_non_negative, default=2000, metavar="N",
                    help="hostile control messages per second (Echo-Request, unknown types; default 2000)")
    sk.add_argument("--gre-rate", type=_non_negative, default=1000, metavar="N",
                    help="hostile forged GRE packets per second (default 1000; 0 = none)")
    sk.add_argument("--pending-calls", type=_non_negative, default=16, metavar="N",
                    help="hostile calls that never authenticate, held at once (default 16)")

    wk = kinds.add_parser("workers", parents=[common_b],
                          help="what a second server worker (core) adds: aggregate, setups, scale, "
                               "the kernel's cost per raw GRE socket")
    wk.add_argument("--sessions", type=_positive(int), default=8, metavar="M",
                    help="sessions of the aggregate run, spread evenly over the workers (default 8)")
    wk.add_argument("--packets", type=_positive(int), default=20000, metavar="N",
                    help="packets per session in the aggregate run (default 20000)")
    wk.add_argument("--clients", type=_positive(int), default=200, metavar="N",
                    help="clients at once in the setups run (default 200)")
    wk.add_argument("--scale-sessions", type=_non_negative, default=20000, metavar="N",
                    help="sessions over 2 workers in the scale run (default 20000; 0: skip)")
    wk.add_argument("--extra-sockets", type=_positive(int), default=64, metavar="E",
                    help="idle filtered raw GRE sockets for the per-socket cost (default 64)")
    wk.add_argument("--parts", default="aggregate,setups,scale,sockets,ledger", metavar="LIST",
                    help="which measurements (default all: aggregate,setups,scale,sockets,ledger)")

    dp = kinds.add_parser("datapath", parents=[common_b],
                          help="the built-in server's cost per received packet, in process (no root)")
    dp.add_argument("--packets", type=_positive(int), default=20000, metavar="N",
                    help="packets per timed pass (default 20000)")
    dp.add_argument("--size", type=int, default=1400, metavar="OCTETS",
                    help="IP packet size, 28..1400 (default 1400)")
    dp.add_argument("--batch", type=_positive(int), default=64, metavar="N",
                    help="datagrams per batch handed to the reader path, as one recvmmsg "
                         "(default 64; 1: one at a time)")
    dp.add_argument("--send-batch", type=_positive(int), default=47, metavar="N",
                    help="packets per send_ips call in the client send timing, as one TSO read "
                         "gives them (default 47; 1: send_ip one by one)")


def _run_datapath(args: argparse.Namespace) -> int:
    import json

    from pptpkit.lab.bench.datapath import measure_datapath

    if not 28 <= args.size <= 1400:
        print(f"pptpkit bench: --size must be 28..1400, not {args.size}", file=sys.stderr)
        return 2
    packets = min(args.packets, 2000) if args.short else args.packets
    if not args.verbose:
        # Session start and end lines of the in-process server are not the benchmark's output.
        logging.getLogger("pptpkit").setLevel(logging.WARNING)
    result = measure_datapath(mppe=args.mppe, packets=packets, size=args.size, repeat=max(args.repeat, 3),
                              batch=args.batch, send_batch=args.send_batch)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        runs = ", ".join(f"{ns:.0f}" for ns in result.ns_per_packet)
        print(f"datapath: MPPE {result.mppe}, {result.packets} packets of {result.size} octets per pass")
        print(f"  server receive path, datagram in -> packet out, batches of {result.batch}: median "
              f"{result.median_ns:.0f} ns/packet (passes: {runs})")
        sends = ", ".join(f"{ns:.0f}" for ns in result.send_ns_per_packet)
        print(f"  client send path, packet in -> datagram out, batches of {result.send_batch}: median "
              f"{result.send_median_ns:.0f} ns/packet (passes: {sends})")
    return 0


def _run_soak(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from pptpkit.lab.bench.report import to_json, to_table
    from pptpkit.lab.bench.soak import POOL_SIZE, SoakPlan, run_soak

    if os.geteuid() != 0:
        return not_permitted("bench", "network namespaces, TUN and raw GRE sockets")
    if not 0 <= args.loss <= 100:
        print(f"pptpkit bench: --loss must be 0..100, not {args.loss}", file=sys.stderr)
        return 2
    command = "pptpkit " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    plan = SoakPlan(
        sessions=min(args.sessions, 20) if args.short else args.sessions,
        minutes=min(args.minutes, 0.75) if args.short else args.minutes,
        loss=args.loss, persist_clients=min(args.persist_clients, 2) if args.short else args.persist_clients,
        probe_interval=args.probe_interval, flood_rate=args.flood_rate, gre_rate=args.gre_rate,
        pending_calls=args.pending_calls, mppe=args.mppe)
    if plan.sessions + plan.persist_clients > POOL_SIZE:
        print(f"pptpkit bench: --sessions + --persist-clients must be at most {POOL_SIZE} (the "
              "TEST-NET address pool)", file=sys.stderr)
        return 2

    def progress(text: str) -> None:
        if not args.json:
            print(f"... {text}", file=sys.stderr, flush=True)

    report = run_soak(plan, progress=progress, command=command)
    print(to_json(report) if args.json else to_table(report))
    return 0 if all(report.checks.values()) else 1


def run_bench_command(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    from pptpkit.lab.bench.report import to_json, to_table
    from pptpkit.lab.bench.runner import VmTarget, run_scale, run_setup, run_throughput

    if args.bench == "datapath":
        return _run_datapath(args)
    if args.bench == "soak":
        return _run_soak(args, argv)
    if os.geteuid() != 0:
        return not_permitted("bench", "network namespaces, TUN and raw GRE sockets")
    command = "pptpkit " + shlex.join(list(argv) if argv is not None else sys.argv[1:])

    def progress(text: str) -> None:
        if not args.json:
            print(f"... {text}", file=sys.stderr, flush=True)

    if args.bench == "throughput":
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        for mode in modes:
            if mode not in ("stateless", "stateful", "none"):
                print(f"pptpkit bench: unknown MPPE mode {mode!r}", file=sys.stderr)
                return 2
        offload_text = args.offload if args.offload is not None else ("on" if args.short else "on,off")
        offloads = [o.strip() for o in offload_text.split(",") if o.strip()]
        if not offloads or any(o not in ("on", "off") for o in offloads):
            print(f"pptpkit bench: --offload takes on, off or on,off, not {offload_text!r}", file=sys.stderr)
            return 2
        report = run_throughput(seconds=min(args.seconds, 2.0) if args.short else args.seconds,
                                repeat=args.repeat, modes=modes, relay=not args.no_relay,
                                profile_dir=args.profile, offloads=[o == "on" for o in offloads],
                                pure=args.pure, progress=progress, command=command)
    elif args.bench == "workers":
        from pptpkit.lab.bench.workers import run_workers

        short = args.short
        report = run_workers(sessions=args.sessions,
                             packets=min(args.packets, 3000) if short else args.packets,
                             repeat=args.repeat,
                             setup_clients=min(args.clients, 50) if short else args.clients,
                             scale_sessions=min(args.scale_sessions, 300) if short else args.scale_sessions,
                             socket_extra=args.extra_sockets, mppe=args.mppe,
                             parts=[p.strip() for p in args.parts.split(",") if p.strip()], progress=progress,
                             command=command)
    elif args.bench == "setup":
        sessions, concurrent = (min(args.sessions, 20), min(args.concurrent, 50)) if args.short else (
            args.sessions, args.concurrent)
        commands = min(args.commands, 3) if args.short else args.commands
        report = run_setup(sessions=sessions, concurrent=concurrent, repeat=args.repeat, mppe=args.mppe,
                           commands=commands, vm=VmTarget() if args.vm else None,
                           progress=progress, command=command)
    else:
        sessions, hold = (min(args.sessions, 300), min(args.hold, 3.0)) if args.short else (
            args.sessions, args.hold)
        echo = min(args.echo_interval, 1.0) if args.short else args.echo_interval
        report = run_scale(sessions=sessions, hold=hold, echo_interval=echo, parallel=args.parallel,
                           mppe=args.mppe, progress=progress, command=command)
    print(to_json(report) if args.json else to_table(report))
    return 0 if all(report.checks.values()) else 1
