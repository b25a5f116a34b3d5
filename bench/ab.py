#!/usr/bin/env python3
"""Two or more builds of Sluice's full path, measured in alternated rounds: what a change did, on a host whose
other guests move one run's figures by more than most changes do.

    python3 bench/ab.py before=/tmp/sluice-before after=target/release/sluice
    python3 bench/ab.py --load max --rounds 4 before=... after=...     # 64 connections, no pauses
    python3 bench/ab.py --stream before=... after=...                  # 20-chunk streams
    python3 bench/ab.py --stream --store 'b=flush_ms = 50' a=BINARY b=BINARY   # one binary, two settings

bench.py's setup, held up for the whole series: one simulator on the load core, and per build a gateway on core 0
with the full path's configuration (plus the build's `--store` lines), its own tenant, key and PostgreSQL database
(dropped at exit). Each build gets a 2-second warm-up at 64 connections; then every round runs each build in turn,
for the paced load right after a run of the direct call as long, each run as bench.py's (wrk and, paced, the
probe). After every run the next waits for the gateway to go idle and its ledger to write what it queued. Per run:
p99 (and Δp99, against the direct call's run before it), the probe's first-byte p99 and its Δ, the gateway's CPU
per request, PostgreSQL's CPU per request, and req/s; at the end the median of each over the rounds, and the
probe's first-byte percentiles over all its rounds' answers pooled (a p99 of thousands, not of a few hundred).
"""
import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import bench as B


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", metavar="NAME=BINARY", help="the builds to compare, by name")
    parser.add_argument("--load", choices=("paced", "lockstep", "max"), default="paced",
                        help="paced (~1,000 req/s, the default), lockstep or max (64 connections)")
    parser.add_argument("--stream", action="store_true", help="streaming requests (default: non-streaming)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--duration", type=int, default=4, help="seconds per run (default 4)")
    parser.add_argument("--store", action="append", default=[], metavar="NAME=LINE",
                        help="a [store] setting for build NAME, e.g. 'b=flush_ms = 50' (repeatable)")
    args = parser.parse_args()
    builds = [spec.split("=", 1) for spec in args.builds]
    if any(len(b) != 2 for b in builds):
        parser.error("each build is NAME=BINARY")
    settings = {name: "" for name, _ in builds}
    for spec in args.store:
        name, _, line = spec.partition("=")
        if name not in settings or not line:
            parser.error(f"--store {spec!r}: not NAME=LINE for a build named on the command line")
        settings[name] += line + "\n"
    paced = args.load in B.PACED_LOADS

    run = B.Run(argparse.Namespace(redis=None, only="full", duration=args.duration, quick=False, no_docs=True,
                                   sluice=builds[0][1], leave_priorities=False))
    run.sluice = builds[0][1]
    databases, folders = [], [run.tmp]
    B.os.sched_setaffinity(0, {B.LOAD_CORE})   # this program and its probe on the load core, as in bench.py
    try:
        B.hold_cores(run)
        B.simulator(run)
        B.pin_postgres(str(B.LOAD_CORE))
        run.pinned = True
        targets = []
        for name, binary in builds:
            run.sluice, run.tmp = binary, Path(tempfile.mkdtemp(prefix="sluice-ab."))
            folders.append(run.tmp)
            run.database = f"sluice_ab_{B.os.getpid()}_{len(databases)}"
            B.psql(f'CREATE DATABASE "{run.database}"')
            databases.append(run.database)
            proc, base, key = B.gateway(run, "full", store=settings[name])
            t = B.Target("full", f"{base}/v1/chat/completions", key, "chat-bench", proc, run.tmp / "sluice-full.log",
                         metrics=f"{base}/metrics")
            B.wrk(t, args.stream, 64, 0, 2)
            B.wait_idle(proc.pid)
            B.wait_ledger(t)
            targets.append((name, t, run.database))
        results = {name: [] for name, _, _ in targets}
        first_bytes = {name: ([], []) for name, _, _ in targets}   # the probe's, pooled: direct's, the build's
        for round_ in range(args.rounds):
            for name, t, database in targets:
                run.database = database
                direct = B.measured_run(run, run.direct, args.stream, args.load, args.duration) if paced else None
                measured = B.measured_run(run, t, args.stream, args.load, args.duration)
                row = {"p99 ms": measured.p99_ms,
                       "Δp99 ms": B.diff(measured.p99_ms, direct.p99_ms) if direct else None,
                       "TTFB p99 ms": B.ttfb99(measured) if args.stream and paced else None,
                       "ΔTTFB p99 ms": B.diff(B.ttfb99(measured), B.ttfb99(direct))
                       if args.stream and direct else None,
                       "CPU µs": measured.cpu_us, "PostgreSQL µs": measured.pg_us, "req/s": measured.rps}
                if args.stream and direct:
                    first_bytes[name][0].extend(direct.ttfb_ms)
                    first_bytes[name][1].extend(measured.ttfb_ms)
                results[name].append(row)
                print(f"round {round_ + 1} {name}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in row.items() if v is not None), flush=True)
        for name, rows in results.items():
            medians = {k: statistics.median(r[k] for r in rows) for k in rows[0] if rows[0][k] is not None}
            print(f"median {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()), flush=True)
        for name, (direct, measured) in first_bytes.items():
            if measured:
                print(f"pooled first bytes {name} ({len(measured)} answers; the direct call's {len(direct)}): "
                      + ", ".join(f"p{round(q * 100)} {B.percentile(measured, q):.2f} ms "
                                  f"({B.diff(B.percentile(measured, q), B.percentile(direct, q)):+.2f})"
                                  for q in (0.5, 0.9, 0.99)), flush=True)
    finally:
        run.database = ""
        B.close(run)
        for database in databases:
            B.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
