#!/usr/bin/env python3
"""Two or more builds of Sluice's full path, measured in alternated rounds: what a change did, on a host whose
other guests move one run's figures by more than most changes do.

    python3 bench/ab.py before=/tmp/sluice-before after=target/release/sluice
    python3 bench/ab.py --load max --rounds 4 before=... after=...     # 64 connections, no pauses
    python3 bench/ab.py --stream before=... after=...                  # 20-chunk streams

bench.py's setup, held up for the whole series: one simulator on the load core, and per build a gateway on core 0
with the full path's configuration, its own tenant, key and PostgreSQL database (dropped at exit). Each build gets
a 2-second warm-up at 64 connections; then every round runs each build in turn, for the paced load right after a
run of the direct call as long (its Δp99 is the difference, as in bench.py's paced rounds). After every run the
next waits for the gateway to go idle and its ledger to write what it queued. Per run: p99 (and Δp99), the
gateway's CPU per request, PostgreSQL's CPU per request (its processes and the build's database's backends, over
the run and the ledger's wait), and req/s; at the end the median of each over the rounds.
"""
import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import bench as B

LOADS = {"paced": (10, 10, True), "max": (64, 0, False)}   # connections, pause ms, random pauses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", metavar="NAME=BINARY", help="the builds to compare, by name")
    parser.add_argument("--load", choices=LOADS, default="paced", help="paced (~1,000 req/s, the default) or max")
    parser.add_argument("--stream", action="store_true", help="streaming requests (default: non-streaming)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--duration", type=int, default=4, help="seconds per run (default 4)")
    args = parser.parse_args()
    builds = [spec.split("=", 1) for spec in args.builds]
    if any(len(b) != 2 for b in builds):
        parser.error("each build is NAME=BINARY")
    conns, pause, jitter = LOADS[args.load]

    run = B.Run(argparse.Namespace(redis=None, only="full", duration=args.duration, quick=False, no_docs=True,
                                   sluice=builds[0][1]))
    run.sluice = builds[0][1]
    databases, folders = [], [run.tmp]
    try:
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
            proc, base, key = B.gateway(run, "full")
            t = B.Target("full", f"{base}/v1/chat/completions", key, "chat-bench", proc, run.tmp / "sluice-full.log",
                         metrics=f"{base}/metrics")
            B.wrk(t, args.stream, 64, 0, 2)
            B.wait_idle(proc.pid)
            B.wait_ledger(t)
            targets.append((name, t, run.database))
        results = {name: [] for name, _, _ in targets}
        for round_ in range(args.rounds):
            for name, t, database in targets:
                direct = B.wrk(run.direct, args.stream, conns, pause, args.duration, jitter) \
                    if args.load == "paced" else None
                cpu, pg = B.cpu_seconds(t.proc.pid), B.postgres_cpu(database)
                measured = B.wrk(t, args.stream, conns, pause, args.duration, jitter)
                B.wait_idle(t.proc.pid)
                B.wait_ledger(t)
                answers = measured["requests"]
                row = {"p99 ms": measured["p99"] / 1000,
                       "Δp99 ms": (measured["p99"] - direct["p99"]) / 1000 if direct else None,
                       "CPU µs": 1e6 * (B.cpu_seconds(t.proc.pid) - cpu) / answers,
                       "PostgreSQL µs": 1e6 * (B.postgres_cpu(database) - pg) / answers,
                       "req/s": answers / args.duration}
                results[name].append(row)
                print(f"round {round_ + 1} {name}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in row.items() if v is not None), flush=True)
        for name, rows in results.items():
            medians = {k: statistics.median(r[k] for r in rows) for k in rows[0] if rows[0][k] is not None}
            print(f"median {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()), flush=True)
    finally:
        run.database = ""
        B.close(run)
        for database in databases:
            B.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
