#!/usr/bin/env python3
"""Instructions per request of Sluice's full path, counted by callgrind.

    python3 bench/callgrind.py --sluice /tmp/sluice       # a chat completion and a stream, about a minute

Time on a shared 2-core guest moves by 20% between runs of one binary; instructions do not move with what
else the host does, so a hot-path change is judged by them first. The setup is bench.py's full path (a
tenant's virtual key, budgets, prices, the ledger in a throwaway PostgreSQL database, the simulator on the
load core), with the gateway under `valgrind --tool=callgrind` on core 0. For each body: one wrk connection
with no pause, a warm-up with the counting off, then a run counted; the figure is the gateway's
instructions (every thread, the ledger's writer included) over the answers. Release builds with
`debug = "line-tables-only"` (the workspace's profile) give callgrind file and line names: the dump files
it prints open with `callgrind_annotate`.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import bench
from bench import BenchError, Run, Target, full_database, gateway, guarded, log, simulator, wrk


def counted(t: Target, stream: bool, dump: Path, warmup_s: int, seconds: int) -> tuple[int, int]:
    """Instructions and answers of one counted run of T's gateway: warm-up first, the counting on only
    around the counted run, then a dump of what was counted (which zeroes the counters)."""
    def control(action: str) -> None:
        subprocess.run(["callgrind_control", action, str(t.proc.pid)], check=True, capture_output=True)

    wrk(t, stream, 1, 0, warmup_s)
    control("--instr=on")
    stats = wrk(t, stream, 1, 0, seconds)
    control("--instr=off")
    before = set(dump.parent.glob(dump.name + "*"))
    control("--dump")
    written = sorted(set(dump.parent.glob(dump.name + "*")) - before, key=lambda p: p.stat().st_mtime)
    if not written:
        raise BenchError(f"callgrind wrote no dump next to {dump}")
    # The header's `summary:` can read 0 in a dump; `totals:` closes the file with the count.
    totals = [line for line in written[-1].read_text(errors="replace").splitlines() if line.startswith("totals:")]
    if not totals:
        raise BenchError(f"no totals in {written[-1]}")
    return int(totals[-1].split()[1]), stats["requests"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sluice", metavar="PATH", help="the binary to count (default: target/release/sluice)")
    parser.add_argument("--seconds", type=int, default=8, help="length of each counted run (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each (default 3)")
    parser.add_argument("--keep", metavar="DIR", help="copy the dump files here (default: print and delete)")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "wrk", "taskset"):
        if not shutil.which(tool):
            log(f"error: {tool} is missing: apt-get install -y {'util-linux' if tool == 'taskset' else tool}")
            return 1
    run = Run(argparse.Namespace(redis=None, only=["full"]))
    run.sluice = str(Path(args.sluice or bench.ROOT / "target/release/sluice").resolve())
    return guarded(run, lambda run: count(run, args))


def count(run: Run, args: argparse.Namespace) -> None:
    """The full path under callgrind: a chat completion's and a stream's instructions, printed."""
    dump = run.tmp / "callgrind.out"
    simulator(run)
    full_database(run)
    proc, base, key = gateway(run, "full", ("valgrind", "--tool=callgrind", "--instr-atstart=no",
                                            f"--callgrind-out-file={dump}"))
    t = Target("full", f"{base}/v1/chat/completions", key, "chat-bench", proc, run.tmp / "sluice-full.log")
    for stream, what in ((False, "non-streaming request"), (True, "20-chunk stream")):
        instructions, answers = counted(t, stream, dump, args.warmup, args.seconds)
        print(f"{instructions / max(answers, 1) / 1000:.1f}k instructions per {what} "
              f"({instructions:,} over {answers:,} answers)")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        for path in run.tmp.glob(dump.name + "*"):
            shutil.copy(path, args.keep)
        log(f"the dump files are in {args.keep}: callgrind_annotate FILE")


if __name__ == "__main__":
    sys.exit(main())
