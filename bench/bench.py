#!/usr/bin/env python3
"""End-to-end proxy benchmark of Sluice: the latency, CPU and memory the gateway adds, next to calling the
upstream (`sluice simulate`) directly and next to nginx as a plain reverse proxy, in one run on one machine.

    python3 bench/bench.py                  # the full series (~10 min), written into docs/benchmarks.md
    python3 bench/bench.py --quick          # 3-second runs: a smoke test of the harness, docs untouched
    python3 bench/bench.py --only nginx,full --sluice /tmp/sluice

The proxy under test runs alone on core 0; the simulator, wrk, this program and PostgreSQL share core 1.
bench/config/ holds the request bodies and the configurations; bench/method.md (the head of the section
written into docs/benchmarks.md) says what each target is and what each figure means.
"""

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from string import Template
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CONFIG, PEERS = ROOT / "bench/config", ROOT / "target/bench-peers"
DOCS, SECTION = ROOT / "docs/benchmarks.md", "## End-to-end proxy benchmark"
PROXY_CORE, LOAD_CORE = 0, 1
# paced: 10 wrk connections and the probe's, each pausing 5-15 ms (10 on average) after every answer: ~1,000 req/s
# arriving independently. lockstep: the same connections each pausing exactly 10 ms, which keeps them in step
# (they start together, and nothing moves one against another): 11 requests at once every ~10 ms.
PACED_CONNS, PACED_PAUSE_MS, MAX_CONNS, WARMUP_S = 11, 10, 64, 2
PACED_LOADS = ("paced", "lockstep")
# A proxy's paced and lockstep runs are cut into rounds, each right after such a run of the direct call (its baseline)
PACED_ROUNDS = 3
TARGETS = {"direct": "direct (simulator alone)", "nginx": "nginx (floor)", "bare": "Sluice bare proxy",
           "full": "Sluice full path", "prompt": "Sluice full, prompt template", "litellm": "LiteLLM proxy",
           "portkey": "Portkey gateway"}
PEER_PROGRAMS = {"litellm": PEERS / "venv/bin/litellm",
                 "portkey": PEERS / "node_modules/@portkey-ai/gateway/build/start-server.js"}
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"   # /usr/sbin is not on every user's PATH
PG_URL = "postgres://postgres@127.0.0.1:5432"   # the full path's PostgreSQL, as its superuser
REDIS_PREFIX = f"sluice-bench-{os.getpid()}"   # the full path's keys in --redis, deleted at exit
# The full path's budgets are set high: the checks run but never refuse. The price (gpt-4o's list price) makes
# every request costed and charged to the tenant.
TENANT_ARGS = ["--rpm", "1000000000", "--tpm", "1000000000000", "--budget-usd", "1000000"]
FULL_BUDGETS = "rpm = 1000000000\ntpm = 1000000000000\nprice = { input = 2.50, output = 10.00, cached_input = 1.25 }"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something the benchmark cannot go on without; the message says what, and what to do."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def read(path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:   # a /proc entry of a process that just exited
        return ""


def log_tail(path: Path) -> str:
    return f"the end of {path.name}:\n" + ("\n".join(read(path).splitlines()[-20:]) or "(empty)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: bytes | None = None, headers: dict | None = None, timeout=60) -> tuple[int, bytes]:
    """A GET, or a POST of BODY: the status and the whole answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET" if body is None else "POST", parts.path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# === CPU and memory, from /proc ===

def proc_fields(pid: int) -> list[str]:
    """/proc/PID/stat from its third field (state) on: [1] is the parent, [11:15] utime, stime, cutime, cstime."""
    text = read(f"/proc/{pid}/stat")
    return text[text.rindex(")") + 2:].split() if text else []


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (the peers fork workers)."""
    children = defaultdict(list)
    for entry in filter(str.isdigit, os.listdir("/proc")):
        if fields := proc_fields(int(entry)):
            children[int(fields[1])].append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children[tree[-1]]
    return tree


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process tree, with its reaped children's (a worker that a peer replaced still counts)."""
    return sum(sum(map(int, proc_fields(p)[11:15])) for p in process_tree(pid)) / CLK_TCK


def memory_mb(pid: int, key: str) -> float:
    """VmRSS (resident now) or VmHWM (peak), summed over a process tree."""
    return sum(int(line.split()[1]) for p in process_tree(pid)
               for line in read(f"/proc/{p}/status").splitlines() if line.startswith(key + ":")) / 1024


def core_busy() -> list[float]:
    """Busy seconds (user, nice, system, irq, softirq, steal) of core 0 and core 1 since boot, then the steal
    alone of each: the time the hypervisor ran something else while the core had work."""
    cores = {f[0]: f for f in map(str.split, read("/proc/stat").splitlines()) if f[0] in ("cpu0", "cpu1")}
    busy = [sum(int(cores[c][i]) for i in (1, 2, 3, 6, 7, 8)) / CLK_TCK for c in ("cpu0", "cpu1")]
    return busy + [int(cores[c][8]) / CLK_TCK for c in ("cpu0", "cpu1")]


def postgres_cpu(database: str) -> float:
    """utime+stime of PostgreSQL's own processes and DATABASE's backends; other databases' are other work.
    A backend's title: "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" (or [local])."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if read(f"/proc/{pid}/comm").strip() == "postgres":
            backend = re.match(r"postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])",
                               read(f"/proc/{pid}/cmdline").replace("\0", " "))
            if not backend or backend.group(1) == database:
                total += sum(map(int, proc_fields(int(pid))[11:13]))
    return total / CLK_TCK


def postgres_pids() -> list[str]:
    """The pids of every PostgreSQL process on the machine."""
    return subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()


def pin_postgres(cores: str) -> None:
    """Every thread of every PostgreSQL process onto CORES; backends forked later inherit the postmaster's."""
    for pid in postgres_pids():
        subprocess.run(["taskset", "-a", "-cp", cores, pid], capture_output=True)


def postgres_idle(idle: bool) -> None:
    """PostgreSQL's processes at idle priority (SCHED_IDLE) or back to normal. In production the ledger's database
    runs on a host of its own; here it shares the load core, where a flush's few milliseconds of work would keep
    the simulator and the clients waiting. At idle priority it runs whenever they do not, which at the paced loads
    is most of the time; at 64 connections the load core is never idle, so the max runs leave it normal."""
    for pid in postgres_pids():
        subprocess.run(["chrt", "-a", "-i" if idle else "-o", "-p", "0", pid], capture_output=True)


def kdamond_pids() -> list[int]:
    """The pids of the guest kernel's DAMON threads (none on most hosts)."""
    found = subprocess.run(["pgrep", "-x", "kdamond.*"], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def quiet_kernel_threads(pids: list[int]) -> list[tuple[int, set[int], int]]:
    """The guest kernel's DAMON threads (kdamond: proactive page-out on hosts that reclaim their guests' memory, no
    part of a deployment) run in bursts of 2 to 5 ms: on the proxy core they stall the proxy, on the load core the
    simulator and the clients. Moved to the load core at idle priority, they run when it has nothing else to do.
    Returns what to restore: (pid, affinity, policy) of each thread moved."""
    moved = []
    for pid in pids:
        try:
            was = (pid, os.sched_getaffinity(pid), os.sched_getscheduler(pid))
            os.sched_setaffinity(pid, {LOAD_CORE})
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
            moved.append(was)
        except OSError:   # not root, or the thread is gone: measured as it is, and the report says so
            pass
    return moved


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroups_off() -> str | None:
    """Turns the scheduler's autogroups off; returns the setting to restore, or None when there was nothing to do.
    With them on, each session is one group, and the scheduler weighs a woken task against the running one as
    their groups: PostgreSQL's backend at idle priority, its group not, kept the load core for 2 to 4 ms of a
    flush while the simulator waited (`perf sched` on a 6.18 guest). Processes forked after this (the gateway's
    database connections, the simulator, wrk) are weighed as themselves, and idle priority means idle again."""
    try:
        was = AUTOGROUP.read_text().strip()
        if was == "0":
            return None
        AUTOGROUP.write_text("0")
        return was
    except OSError:   # a kernel without autogroups, or not root: measured as it is, and the report says so
        return None


def restore_kernel_threads(moved: list[tuple[int, set[int], int]]) -> None:
    """Puts back what quiet_kernel_threads() moved."""
    for pid, affinity, policy in moved:
        try:
            os.sched_setaffinity(pid, affinity)
            os.sched_setscheduler(pid, policy, os.sched_param(0))
        except OSError:
            pass


# === the run's state, its processes and its clean-up ===

@dataclass
class Target:
    """What is measured: where the requests go, with which key and bodies, and whose CPU and memory count."""
    name: str                  # a key of TARGETS
    url: str
    auth: str
    bodies: str                # bench/config/bodies/BODIES.json, and BODIES.stream.json for the streaming runs
    proc: subprocess.Popen     # its process (with its descendants)
    log: Path                  # shown when it misbehaves
    headers: dict[str, str] = field(default_factory=dict)
    metrics: str = ""          # a Sluice target's /metrics, whose ledger backlog is awaited between runs

    def body(self, stream: bool) -> Path:
        return CONFIG / "bodies" / f"{self.bodies}{'.stream' if stream else ''}.json"

    def request_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.auth}", **self.headers}


@dataclass
class Result:
    """One measured run of one target."""
    target: str
    stream: bool
    load: str                  # "paced" (~1,000 req/s), "lockstep" (the same in bursts of 11) or "max" (64 connections)
    requests: int              # answers received, whatever their status
    rps: float                 # requests per second of wrk's duration of the run
    errors: int                # non-2xx answers, socket errors, timeouts
    p50_ms: float | None       # wrk's latency percentiles over whole responses (None: not one answer)
    p90_ms: float | None
    p99_ms: float | None
    cpu_us: float | None       # the target's CPU time per request
    core_used: float           # the target's CPU time over the run's wall time
    pg_us: float | None        # PostgreSQL's CPU time per request, for the full path's ledger
    other_pct: list[float]     # CPU of processes not the benchmark's, on core 0 and core 1, in % of the run
    steal_pct: list[float]     # of which the hypervisor's steal, on each core
    drain_s: float             # how long the target stayed busy after wrk stopped (requests in flight)
    ledger_s: float            # then how long its usage ledger took to write what it had queued and spooled
    ttfb_ms: list[float]       # the probe's times to first byte (paced and lockstep streaming runs)
    # a proxy's paced or lockstep run: its rounds, each (the direct call's run, the target's run right after it)
    rounds: list[tuple["Result", "Result"]] = field(default_factory=list)
    # a Sluice target's: nginx in each of its rounds, (the direct call's run, nginx's run just before it)
    controls: list[tuple["Result", "Result"]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return f"{'streaming' if self.stream else 'non-streaming'} {self.load}"


@dataclass
class Run:
    """The benchmark's state: what it started (undone at exit), what it measured, and what the report shows."""
    args: argparse.Namespace
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sluice-bench.")))
    sluice: str = ""           # the binary under test
    sim: subprocess.Popen | None = None   # the upstream
    sim_url: str = ""
    direct: "Target | None" = None        # the simulator called directly: every paced round's baseline
    control: "Target | None" = None       # nginx, left running after its series: a run in each of Sluice's rounds
    procs: list[subprocess.Popen] = field(default_factory=list)   # running, stopped at exit
    results: list[Result] = field(default_factory=list)
    rss: dict[str, tuple[float, float]] = field(default_factory=dict)   # target: (after warm-up, peak), MB
    notes: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)   # the peers' and PostgreSQL's
    database: str = ""         # the full path's throwaway PostgreSQL database, dropped at exit
    pinned: bool = False       # whether PostgreSQL is on the load core
    kernel_threads: list = field(default_factory=list)   # quiet_kernel_threads()'s, restored at exit
    autogroup: str | None = None   # the autogroup setting autogroups_off() found, restored at exit
    load_at_start: float = 0.0


def start(run: Run, name: str, core: int, argv: list, health: str, timeout: float = 30, cwd=None,
          env=None) -> subprocess.Popen:
    """ARGV pinned to CORE, in a session of its own (stop() ends its whole group), its output in TMP/NAME.log,
    once HEALTH answers anything; fails when the process exits or does not answer within TIMEOUT seconds."""
    with open(run.tmp / f"{name}.log", "wb") as out:
        proc = subprocess.Popen(["taskset", "-c", str(core), *map(str, argv)], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    run.procs.append(proc)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            request(health, timeout=2)
            return proc
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
    what = f"exited with status {proc.returncode}" if proc.poll() is not None else f"did not answer in {timeout} s"
    raise BenchError(f"{name} {what} ({health})\n{log_tail(run.tmp / f'{name}.log')}")


def stop(run: Run, proc: subprocess.Popen) -> None:
    """PROC's process group: SIGTERM, then SIGKILL after 10 s."""
    run.procs.remove(proc)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):   # the group is gone already
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
            return


def close(run: Run) -> None:
    """Stops every process, drops the throwaway database, gives PostgreSQL its cores back, deletes the Redis keys."""
    while run.procs:
        stop(run, run.procs[-1])
    if run.database:
        try:
            psql(f'DROP DATABASE IF EXISTS "{run.database}" WITH (FORCE)')
            log(f"dropped the database {run.database}")
        except BenchError as err:
            log(f"could not drop the database {run.database} ({err}): drop it by hand")
    if run.pinned:
        pin_postgres(f"0-{os.cpu_count() - 1}")
        postgres_idle(False)
    restore_kernel_threads(run.kernel_threads)
    run.kernel_threads = []
    if run.autogroup is not None:
        with contextlib.suppress(OSError):
            AUTOGROUP.write_text(run.autogroup)
        run.autogroup = None
    if run.args.redis and run.database:
        cli = ["redis-cli", "-u", run.args.redis]
        try:
            keys = subprocess.run([*cli, "--scan", "--pattern", f"{REDIS_PREFIX}:*"], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.split()
            if keys:
                subprocess.run([*cli, "DEL", *keys], capture_output=True, check=True, timeout=10)
            log(f"deleted the {len(keys)} Redis keys of the full path ({REDIS_PREFIX}:*)")
        except (OSError, subprocess.SubprocessError) as err:
            log(f"could not delete the Redis keys {REDIS_PREFIX}:* ({err}): delete them by hand")
    shutil.rmtree(run.tmp, ignore_errors=True)


# === load and measurement ===

class Probe(threading.Thread):
    """The paced and lockstep runs' last connection: requests one after the other on one keep-alive connection,
    pausing like wrk's connections, each timed to its first byte (the status line and headers received)."""

    def __init__(self, t: Target, stream: bool, jitter: bool):
        super().__init__(daemon=True)
        self.t, self.body, self.halt = t, t.body(stream).read_bytes(), threading.Event()
        self.ttfb_ms, self.answers, self.errors, self.jitter = [], 0, 0, jitter

    def pause_s(self) -> float:
        return (random.uniform(0.5, 1.5) if self.jitter else 1.0) * PACED_PAUSE_MS / 1000

    def run(self) -> None:
        url, conn = urlsplit(self.t.url), None
        while not self.halt.wait(self.pause_s()):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                    conn.connect()
                begin = time.perf_counter()
                conn.request("POST", url.path, self.body, self.t.request_headers())
                response = conn.getresponse()
                ttfb_ms = (time.perf_counter() - begin) * 1000
                response.read()
                self.answers += 1
                if response.status == 200:
                    self.ttfb_ms.append(ttfb_ms)
                else:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = None   # a new connection for the next request
        if conn:
            conn.close()


def wrk(t: Target, stream: bool, conns: int, pause_ms: int, seconds: int, jitter: bool = False) -> dict[str, int]:
    """One wrk run against T from the load core (bench/config/post.lua): its counts, and latencies in µs. JITTER:
    each pause drawn from half to one and a half times PAUSE_MS."""
    env = os.environ | {"BENCH_BODY": str(t.body(stream)), "BENCH_AUTH": t.auth, "BENCH_DELAY_MS": str(pause_ms),
                        "BENCH_JITTER": "1" if jitter else "0",
                        "BENCH_HEADERS": "|".join(f"{k}: {v}" for k, v in t.headers.items())}
    done = subprocess.run(["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout",
                           "10s", "-s", str(CONFIG / "post.lua"), t.url], env=env, capture_output=True, text=True)
    found = re.search(r"^BENCH (.*)$", done.stdout, re.M)
    if done.returncode or not found:
        raise BenchError(f"wrk failed against {t.name}:\n{done.stdout}{done.stderr}")
    return {k: int(v) for k, v in (pair.split("=") for pair in found.group(1).split())}


def wait_idle(pid: int) -> float:
    """Seconds until the target uses under 5% of a core over half a second (at most 60). wrk stops by closing
    its connections, and a slow target goes on with what it had accepted: that must not fall into the next run."""
    begin = time.monotonic()
    while True:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before <= 0.025 or time.monotonic() - begin > 60:
            return time.monotonic() - begin - 0.5


def ledger_backlog(t: Target) -> int | None:
    """Rows a Sluice target's usage ledger has yet to write (its queue and its spool), from /metrics."""
    try:
        status, body = request(t.metrics, timeout=5)
    except (OSError, http.client.HTTPException):
        return None
    found = re.findall(r"^sluice_ledger_(?:queue_depth|spool_pending) (\d+)$", body.decode(errors="replace"), re.M)
    return sum(int(n) for n in found) if status == 200 and len(found) == 2 else None


def wait_ledger(t: Target) -> float:
    """Seconds until a Sluice target's ledger has written its backlog (at most 120). At 64 connections the
    gateway answers more rows a second than PostgreSQL, on the load core, takes: the rest wait in the queue and
    the spool, and writing them must not fall into the next run."""
    begin = time.monotonic()
    while t.metrics and (ledger_backlog(t) or 0) > 0 and time.monotonic() - begin < 120:
        time.sleep(0.2)
    return time.monotonic() - begin


def measured_run(run: Run, t: Target, stream: bool, load: str, seconds: int) -> Result:
    """One run: wrk (and the probe when paced or in lockstep), the target's CPU and PostgreSQL's, and the other work
    on each core."""
    paced, jitter = load in PACED_LOADS, load == "paced"   # paced: pauses, and the probe; jitter: random pauses
    database = run.database if t.name in ("full", "prompt") else ""

    def readings():
        ours = resource.getrusage(resource.RUSAGE_CHILDREN)   # this program's children: wrk
        return [time.monotonic(), cpu_seconds(t.proc.pid), cpu_seconds(run.sim.pid),
                postgres_cpu(database) if database else 0.0,
                sum(os.times()[:2]) + ours.ru_utime + ours.ru_stime, *core_busy()]

    yielding = bool(database) and paced and not run.args.leave_priorities
    if yielding:
        postgres_idle(True)
    before, probe = readings(), Probe(t, stream, jitter)
    if paced:
        probe.start()
    stats = wrk(t, stream, PACED_CONNS - 1 if paced else MAX_CONNS, PACED_PAUSE_MS if paced else 0, seconds, jitter)
    if paced:
        probe.halt.set()
        probe.join()
    if yielding:
        postgres_idle(False)
    wall, cpu, sim_cpu, pg_cpu, ours, core0, core1, steal0, steal1 = (a - b for a, b in zip(readings(), before))
    # Other work: each core's busy time less the benchmark's there (the target on core 0; the simulator, wrk,
    # this program and PostgreSQL on core 1). Clamped: /proc/stat brackets the run to a tick.
    other = [core0 - (cpu if t.proc is not run.sim else 0), core1 - sim_cpu - ours - pg_cpu]
    requests, drain_s = stats["requests"] + probe.answers, wait_idle(t.proc.pid)
    p50, p90, p99 = (stats[p] / 1000 if stats["requests"] else None for p in ("p50", "p90", "p99"))
    r = Result(t.name, stream, load, requests, rps=requests / stats["duration_us"] * 1e6,
               errors=stats["errors"] + probe.errors, p50_ms=p50, p90_ms=p90, p99_ms=p99,
               cpu_us=cpu / requests * 1e6 if requests else None, core_used=cpu / wall,
               pg_us=pg_cpu / requests * 1e6 if database and requests else None,
               other_pct=[max(0.0, min(100.0, v / wall * 100)) for v in other],
               steal_pct=[min(100.0, v / wall * 100) for v in (steal0, steal1)], drain_s=drain_s,
               ledger_s=wait_ledger(t), ttfb_ms=probe.ttfb_ms if stream else [])
    log(f"  {t.name} {r.kind} ({seconds} s): {r.rps:.0f} req/s, p99 {cell(r.p99_ms)} ms, "
        f"CPU/req {cell(r.cpu_us, '.0f')} µs, other work on cores 0/1 {r.other_pct[0]:.0f}%/{r.other_pct[1]:.0f}% "
        f"(steal {r.steal_pct[0]:.0f}%/{r.steal_pct[1]:.0f}%), errors {r.errors}"
        + ("  ⚠ ERRORS" if r.errors else ""))
    return r


def middle(values) -> float | None:
    """The median of the values measured (None: none was)."""
    known = [v for v in values if v is not None]
    return median(known) if known else None


def paced_rounds(run: Run, t: Target, stream: bool, load: str) -> Result:
    """A proxy's paced (or lockstep) run as PACED_ROUNDS rounds, each such a run of the direct call then one of the
    target, as long, so that each overhead compares runs seconds apart; the result's latencies are the rounds'
    medians. One run's p99 moves by tenths of a millisecond with whatever else the host does, and a median of
    paired rounds stands still where the difference of two single runs, minutes apart, does not."""
    seconds = max(1, round(run.args.duration / PACED_ROUNDS))
    # Sluice's rounds also run nginx, first: the direct call runs on the load core alone, so a stretch in which the
    # host holds up the proxies' core shows in nginx's run seconds before the gateway's, and nowhere else.
    control = run.control if t.metrics else None
    rounds, controls = [], []
    for _ in range(PACED_ROUNDS):
        nginx_run = measured_run(run, control, stream, load, seconds) if control else None
        direct_run = measured_run(run, run.direct, stream, load, seconds)
        rounds.append((direct_run, measured_run(run, t, stream, load, seconds)))
        if nginx_run:
            controls.append((direct_run, nginx_run))
    runs = [r for _, r in rounds]
    requests = sum(r.requests for r in runs)

    def per_request(figure) -> float | None:   # weighted by the rounds' answers
        known = [(figure(r), r.requests) for r in runs if figure(r) is not None]
        return sum(v * n for v, n in known) / sum(n for _, n in known) if known else None

    return Result(t.name, stream, load, requests, rps=median(r.rps for r in runs),
                  errors=sum(r.errors for r in runs), p50_ms=middle(r.p50_ms for r in runs),
                  p90_ms=middle(r.p90_ms for r in runs), p99_ms=middle(r.p99_ms for r in runs),
                  cpu_us=per_request(lambda r: r.cpu_us), core_used=median(r.core_used for r in runs),
                  pg_us=per_request(lambda r: r.pg_us), other_pct=[max(r.other_pct[i] for r in runs) for i in (0, 1)],
                  steal_pct=[max(r.steal_pct[i] for r in runs) for i in (0, 1)],
                  drain_s=max(r.drain_s for r in runs), ledger_s=max(r.ledger_s for r in runs),
                  ttfb_ms=[v for r in runs for v in r.ttfb_ms], rounds=rounds, controls=controls)


def measure(run: Run, t: Target) -> None:
    """The series against one target: a completion and a stream must come back first (a misconfigured target
    fails loudly), then a warm-up (pools, allocator, caches; not recorded), the RSS, and the four runs."""
    log(f"measuring {t.name}")
    for stream, expected in ((False, b'"choices"'), (True, b"[DONE]")):
        try:
            status, reply = request(t.url, t.body(stream).read_bytes(), t.request_headers())
        except (OSError, http.client.HTTPException) as err:
            status, reply = 0, str(err).encode()
        if status != 200 or expected not in reply:
            raise BenchError(f"{t.name} answered {t.body(stream).name} with {status}, not 200 and "
                             f"{expected.decode()}: {reply[-600:].decode(errors='replace')}\n{log_tail(t.log)}")
    wrk(t, False, MAX_CONNS, 0, WARMUP_S)
    wait_idle(t.proc.pid)
    rss = memory_mb(t.proc.pid, "VmRSS")
    if (waited := wait_ledger(t)) >= 1:
        run.notes.append(f"{TARGETS[t.name]}: after the warm-up, the usage ledger took {waited:.0f} s to write its "
                         "backlog (queue and spool); the runs started after it.")
    results = [paced_rounds(run, t, stream, load) if load in PACED_LOADS and t is not run.direct
               else measured_run(run, t, stream, load, run.args.duration)
               for stream in (False, True) for load in (*PACED_LOADS, "max")]
    run.rss[t.name] = (rss, memory_mb(t.proc.pid, "VmHWM"))
    run.results += results


# === the targets (bench/method.md describes each): start, measure, stop ===

def direct(run: Run) -> None:
    """The simulator alone: the upstream of every other target, so started first and stopped at exit."""
    simulator(run)
    measure(run, run.direct)


def simulator(run: Run) -> None:
    """Starts the upstream on the load core; run.direct calls it."""
    port = free_port()
    run.sim_url = f"http://127.0.0.1:{port}"
    run.sim = start(run, "simulator", LOAD_CORE, [run.sluice, "simulate", "--listen", f"127.0.0.1:{port}",
                                                  "--reply-tokens", "20"], f"{run.sim_url}/healthz")
    run.direct = Target("direct", f"{run.sim_url}/v1/chat/completions", "sk-upstream", "chat-bench-model", run.sim,
                        run.tmp / "simulator.log")


def nginx(run: Run) -> None:
    folder, port = run.tmp / "nginx", free_port()
    folder.mkdir()
    (folder / "nginx.conf").write_text(Template(read(CONFIG / "nginx.conf")).substitute(
        dir=folder, sim_port=urlsplit(run.sim_url).port, port=port))
    run.versions.append(subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip())
    # -e stderr: what goes wrong before the configuration's error_log applies lands in nginx.log.
    proc = start(run, "nginx", PROXY_CORE, [NGINX, "-p", folder, "-c", folder / "nginx.conf", "-e", "stderr"],
                 f"http://127.0.0.1:{port}/healthz")
    run.control = Target("nginx", f"http://127.0.0.1:{port}/v1/chat/completions", "sk-upstream", "chat-bench-model",
                         proc, folder / "error.log")
    measure(run, run.control)   # then left running (stopped at exit), idle but in Sluice's rounds


def gateway(run: Run, variant: str, wrapper: tuple = (), store: str = "") -> tuple[subprocess.Popen, str, str]:
    """Sluice from bench/config/sluice.toml, bare or full, in a folder of its own (relative defaults such as the
    SQLite ledger land there); for the full path, first its tenant and virtual key, made with the CLI. WRAPPER:
    a command the gateway runs under (valgrind); STORE: more `[store]` settings for the full path (ab.py's).
    Returns the process, the base URL and the key to call it with."""
    folder, port, full = run.tmp / f"sluice-{variant}", free_port(), variant == "full"
    (folder / "config").mkdir(parents=True)
    (folder / "config/prices.toml").symlink_to(ROOT / "config/prices.toml")
    settings = {"what": "bare proxy", "port": port, "sim": run.sim_url, "store": "# [store]: the defaults",
                "keys": '["sk-bench"]', "budgets": "", "prompts": run.tmp / "no-prompts"}
    if full:
        store = f'[store]\nurl = "{PG_URL}/{run.database}"\n{store}'
        if run.args.redis:
            store += f'\n\n[redis]\nurl = "{run.args.redis}"\nprefix = "{REDIS_PREFIX}"'
        settings |= {"what": "full path (a tenant and its virtual key, budgets, prices, usage ledger in postgres, "
                             "prompt templates)", "store": store, "budgets": FULL_BUDGETS,
                     "keys": "[]   # virtual keys only: sluice keys create", "prompts": CONFIG / "prompts"}
    config = folder / "sluice.toml"
    config.write_text(Template(read(CONFIG / "sluice.toml")).substitute(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "RUST_LOG"}   # no overrides
    key = "sk-bench"
    if full:
        for args in (["tenants", "create", "bench", *TENANT_ARGS], ["keys", "create", "bench", "--name", "bench"]):
            done = subprocess.run([run.sluice, "--config", config, *args], cwd=folder, env=env, capture_output=True,
                                  text=True)
            if done.returncode:
                raise BenchError(f"sluice {' '.join(args[:2])} failed:\n{done.stdout}{done.stderr}")
        if not (found := re.search(r"^key:\s*(\S+)", done.stdout, re.M)):
            raise BenchError(f"no key in the output of sluice keys create:\n{done.stdout}")
        key = found.group(1)
    proc = start(run, f"sluice-{variant}", PROXY_CORE, [*wrapper, run.sluice, "--config", config, "serve"],
                 f"http://127.0.0.1:{port}/healthz", timeout=300 if wrapper else 30, cwd=folder, env=env)
    return proc, f"http://127.0.0.1:{port}", key


def sluice_bare(run: Run) -> None:
    proc, base, key = gateway(run, "bare")
    measure(run, Target("bare", f"{base}/v1/chat/completions", key, "chat-bench", proc, run.tmp / "sluice-bare.log",
                        metrics=f"{base}/metrics"))
    stop(run, proc)


def sluice_full(run: Run) -> None:
    """The full path and its prompt template on one gateway; its ledger in a throwaway PostgreSQL database."""
    full_database(run)
    proc, base, key = gateway(run, "full")
    for name, path, bodies in (("full", "chat/completions", "chat-bench"), ("prompt", "prompts/bench", "prompt")):
        if name in run.args.only:
            measure(run, Target(name, f"{base}/v1/{path}", key, bodies, proc, run.tmp / "sluice-full.log",
                                metrics=f"{base}/metrics"))
    ledger_check(run, base)
    stop(run, proc)
    pin_postgres(f"0-{os.cpu_count() - 1}")
    run.pinned = False
    if run.args.redis:
        run.notes.append(f"The full path shared its budgets through the Redis at {run.args.redis} (`--redis`).")
    if not run.args.leave_priorities:
        run.notes.append("PostgreSQL ran at idle priority during the paced and lockstep runs, as bench/method.md says "
                         "(`--leave-priorities` leaves it be).")


def full_database(run: Run) -> None:
    """The full path's throwaway PostgreSQL database (dropped at exit), with PostgreSQL pinned to the load core
    before anything connects to it (off the gateway's core)."""
    try:
        run.versions.append("PostgreSQL " + psql("SHOW server_version").split()[0])
    except (OSError, BenchError) as err:
        raise BenchError(f"the full path keeps its ledger in PostgreSQL at {PG_URL}, which psql cannot reach ({err}): "
                         "start it (psql: apt-get install postgresql-client) or leave it out: --only direct,nginx,bare")
    database = f"sluice_bench_{os.getpid()}"
    psql(f'CREATE DATABASE "{database}"')
    run.database, run.pinned = database, True
    pin_postgres(str(LOAD_CORE))


def litellm(run: Run) -> None:
    folder, port = run.tmp / "litellm", free_port()
    folder.mkdir()
    (folder / "config.yaml").write_text(Template(read(CONFIG / "litellm.yaml")).substitute(sim=run.sim_url))
    # No database or cache from the environment; the model cost map bundled with the package (no fetch at start).
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "DIRECT_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL")} | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY_DISABLED": "True", "DISABLE_ADMIN_UI": "True",
        "LITELLM_LOG": "ERROR"}
    dist = next(PEERS.glob("venv/lib/python*/site-packages/litellm-*.dist-info"), None)
    run.versions.append(f"LiteLLM {dist.name.split('-')[1].removesuffix('.dist-info') if dist else '?'}")
    # Its start-up imports a lot: 10-30 s on a quiet machine, more on a busy one.
    proc = start(run, "litellm", PROXY_CORE, [PEER_PROGRAMS["litellm"], "--config", folder / "config.yaml", "--host",
                                              "127.0.0.1", "--port", port, "--num_workers", "1"],
                 f"http://127.0.0.1:{port}/health/liveliness", 300, folder, env)
    measure(run, Target("litellm", f"http://127.0.0.1:{port}/v1/chat/completions", "sk-bench", "chat-bench", proc,
                        run.tmp / "litellm.log"))
    stop(run, proc)


def portkey(run: Run) -> None:
    port, program = free_port(), PEER_PROGRAMS["portkey"]
    run.versions.append(f"Portkey gateway {json.loads(read(program.parent.parent / 'package.json'))['version']}")
    proc = start(run, "portkey", PROXY_CORE, ["node", program, f"--port={port}", "--headless"],
                 f"http://127.0.0.1:{port}/", 60, run.tmp)
    measure(run, Target("portkey", f"http://127.0.0.1:{port}/v1/chat/completions", "sk-upstream", "chat-bench-model",
                        proc, run.tmp / "portkey.log",
                        {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{run.sim_url}/v1"}))
    stop(run, proc)


# === the full path's PostgreSQL ===

def psql(sql: str, database: str = "postgres") -> str:
    """SQL as the superuser; fields separated by |."""
    argv = ["psql", "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", f"{PG_URL}/{database}", "-c", sql]
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ | {"PGCONNECT_TIMEOUT": "5"})
    if done.returncode:
        raise BenchError(done.stderr.strip() or f"psql exited with {done.returncode}")
    return done.stdout.strip()


def ledger_check(run: Run, base: str) -> None:
    """The ledger must hold a row for each upstream call of the gateway's life (checks, warm-ups, runs), each with
    the tenant. Its writer sends a batch every 200 ms or 500 rows: this waits up to 30 s for the last one."""
    for _ in range(60):
        metrics = request(f"{base}/metrics")[1].decode()
        calls = sum(int(float(line.split()[-1])) for line in metrics.splitlines()
                    if line.startswith("sluice_upstream_attempts_total"))
        rows, tenant, cost = map(int, psql("SELECT count(*), count(*) FILTER (WHERE tenant = 'bench'), "
                                           "coalesce(sum(cost_micros), 0) FROM usage_ledger", run.database).split("|"))
        if rows == calls:
            break
        time.sleep(0.5)
    good = rows == calls == tenant
    run.notes.append(f"{'' if good else '⚠ MISMATCH: '}Usage ledger of the full path: {rows} rows for {calls} upstream "
                     f"calls (the gateway's whole life: checks, warm-ups, runs), {tenant} with the tenant, "
                     f"${cost / 1e6:.2f} charged.")
    log(f"  ledger: {rows} rows for {calls} upstream calls: " + ("consistent" if good else "MISMATCH (see the notes)"))


# === the report ===

def percentile(values: list[float], q: float) -> float | None:
    return sorted(values)[int((len(values) - 1) * q)] if values else None


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def cell(value: float | None, spec: str = ".2f", sign: bool = False) -> str:
    return "–" if value is None else format(value, ("+" if sign else "") + spec)


def cells(values: list[float | None], spec: str = ".2f", sign: bool = False) -> str:
    """Figures sharing a cell, "a / b"; "–" when none was measured."""
    return "–" if all(v is None for v in values) else " / ".join(cell(v, spec, sign) for v in values)


def table(columns: list[tuple], rows: list) -> str:
    """A Markdown table; each column is (heading, alignment "---" or "--:", the function of a row giving its cell)."""
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join(c[1] for c in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c[2](row) for c in columns) + " |" for row in rows])


def find(run: Run, target: str, stream: bool, load: str) -> Result | None:
    return next((r for r in run.results if (r.target, r.stream, r.load) == (target, stream, load)), None)


def overhead(r: Result | None, figure, control: bool = False) -> float | None:
    """A proxy's paced overhead: the median over its rounds of its figure less the direct call's just before; with
    CONTROL, nginx's in the same rounds (None when it did not run in them)."""
    return middle(diff(figure(t), figure(d)) for d, t in (r.controls if control else r.rounds)) if r else None


def ttfb50(r: Result) -> float | None:
    return percentile(r.ttfb_ms, 0.5)


def ttfb99(r: Result) -> float | None:
    return percentile(r.ttfb_ms, 0.99)


def results_table(run: Run) -> str:
    """Every run of every target; Δ: a paced run's overhead against the direct call's."""
    def short_of_pace(r: Result) -> bool:   # under 90% of its baselines' paced rate: figures at a lower rate
        return bool(r.rounds) and r.rps < 0.9 * median(d.rps for d, _ in r.rounds)

    return table([
        ("target", "---", lambda r: TARGETS[r.target]),
        ("stream", "---", lambda r: "yes" if r.stream else "no"),
        ("load", "---", lambda r: {"paced": f"{PACED_CONNS} conns, {PACED_PAUSE_MS // 2}-{PACED_PAUSE_MS * 3 // 2} ms "
                                            "pause",
                                   "lockstep": f"{PACED_CONNS} conns in step, {PACED_PAUSE_MS} ms pause"}.get(
                                       r.load, f"{MAX_CONNS} conns")),
        ("req/s", "--:", lambda r: f"{r.rps:.0f}" + (" †" if short_of_pace(r) else "")),
        ("p50 ms", "--:", lambda r: cell(r.p50_ms)),
        ("p90 ms", "--:", lambda r: cell(r.p90_ms)),
        ("p99 ms", "--:", lambda r: cell(r.p99_ms)),
        ("Δp50 ms", "--:", lambda r: cell(overhead(r, lambda x: x.p50_ms), sign=True)),
        ("Δp99 ms", "--:", lambda r: cell(overhead(r, lambda x: x.p99_ms), sign=True)),
        ("CPU/req µs", "--:", lambda r: cell(r.cpu_us, ".0f") + (" (simulator)" if r.target == "direct" else "")
         + (" ‡" if r.drain_s >= 1 else "")),
        ("core used", "--:", lambda r: f"{r.core_used:.0%}"),
        ("TTFB p50/p99 ms", "--:", lambda r: cells([ttfb50(r), ttfb99(r)])),
        ("ΔTTFB p50/p99 ms", "--:", lambda r: cells([overhead(r, ttfb50), overhead(r, ttfb99)], sign=True)),
        ("RSS warm/peak MB", "--:", lambda r: cells(run.rss[r.target], ".1f")),
        ("errors", "--:", lambda r: f"**{r.errors}**" if r.errors else "0"),
        ("other work core 0/1 (steal)", "--:", lambda r: f"{r.other_pct[0]:.0f}% / {r.other_pct[1]:.0f}% "
         f"({r.steal_pct[0]:.0f}% / {r.steal_pct[1]:.0f}%)" + (" ⚠" if max(r.other_pct) > 10 else "")),
    ], run.results)


def summary_table(run: Run) -> str:
    """Issue 16's targets: the full path against nginx, measured in the same run. Latencies come with their
    overhead against the direct call, which is what their targets are about."""
    def figures(target: str, control: bool = False) -> dict[str, float | None]:   # None: not measured
        """TARGET's figures; with CONTROL, its overheads are nginx's in TARGET's rounds."""
        def p99(r: Result) -> float | None:
            return r.p99_ms

        ns, st = find(run, target, False, "paced"), find(run, target, True, "paced")
        ns_ls, st_ls = find(run, target, False, "lockstep"), find(run, target, True, "lockstep")
        ns_max, st_max = find(run, target, False, "max"), find(run, target, True, "max")
        return {"cpu": ns and ns.cpu_us, "cpu_stream": st and st.cpu_us, "cpu_max": ns_max and ns_max.cpu_us,
                "cpu_stream_max": st_max and st_max.cpu_us, "rps": ns_max and ns_max.rps,
                "streams": st_max and st_max.rps, "p99": ns and ns.p99_ms,
                "ttfb99": st and ttfb99(st), "stream99": st and st.p99_ms,
                "rss": run.rss.get(target, [None])[0], "p99+": overhead(ns, p99, control),
                "ttfb99+": overhead(st, ttfb99, control), "stream99+": overhead(st, p99, control),
                "p99_ls": ns_ls and ns_ls.p99_ms, "p99_ls+": overhead(ns_ls, p99, control),
                "ttfb99_ls": st_ls and ttfb99(st_ls), "ttfb99_ls+": overhead(st_ls, ttfb99, control),
                "stream99_ls": st_ls and st_ls.p99_ms, "stream99_ls+": overhead(st_ls, p99, control)}

    n, s, c = figures("nginx"), figures("full"), figures("full", control=True)
    # label, figures, their format, the target, whether the full path meets it (a figure not measured is None:
    # the test raises TypeError and there is no verdict)
    # CPU per request as the issue measured it: under full load (64 connections), where a request's cost is its
    # own; at ~1,000 req/s each one also pays for waking an idle process, shown second.
    goals = [("CPU per non-streaming request, µs (64 connections / ~1,000 req/s)", ["cpu_max", "cpu"], ".0f",
              "≤ 2.5x nginx", lambda: s["cpu_max"] <= 2.5 * n["cpu_max"]),
             ("CPU per 20-chunk stream, µs (64 connections / ~1,000 req/s)", ["cpu_stream_max", "cpu_stream"],
              ".0f", "≤ 2.5x nginx", lambda: s["cpu_stream_max"] <= 2.5 * n["cpu_stream_max"]),
             ("max req/s, non-streaming (64 connections)", ["rps"], ".0f", "", None),
             ("max streams/s (64 connections)", ["streams"], ".0f", "", None),
             ("p99 at ~1,000 req/s, non-streaming, ms (overhead vs direct)", ["p99"], ".2f", "overhead < 0.5 ms",
              lambda: s["p99+"] < 0.5),
             ("stream TTFB p99 / full p99 at ~1,000 req/s, ms (overheads)", ["ttfb99", "stream99"], ".2f",
              "overheads < 0.5 ms", lambda: max(s["ttfb99+"], s["stream99+"]) < 0.5),
             # The same rate in bursts: what the paced runs measured before the pauses were drawn at random.
             ("p99 with 11 requests at once every ~10 ms, non-streaming, ms (overhead)", ["p99_ls"], ".2f",
              "overhead < 0.5 ms", lambda: s["p99_ls+"] < 0.5),
             ("the same, stream TTFB p99 / full p99, ms (overheads)", ["ttfb99_ls", "stream99_ls"], ".2f",
              "overheads < 0.5 ms", lambda: max(s["ttfb99_ls+"], s["stream99_ls+"]) < 0.5),
             ("resident memory after warm-up, MB", ["rss"], ".1f", "≤ 40 MB", lambda: s["rss"] <= 40)]

    def latency(keys: list[str]) -> bool:
        return keys[0] in ("p99", "ttfb99", "p99_ls", "ttfb99_ls")

    def shown(f: dict, keys: list[str], spec: str) -> str:
        overheads = [f.get(k + "+") for k in keys]
        together = latency(keys) and None not in overheads
        return cells([f[k] for k in keys], spec) + (f" ({cells(overheads, spec, sign=True)})" if together else "")

    def met(test) -> str:
        try:
            return "yes" if test() else "**no**"
        except TypeError:
            return "–"

    return table([
        ("", "---", lambda g: g[0]),
        ("nginx", "--:", lambda g: shown(n, g[1], g[2])),
        ("Sluice full path", "--:", lambda g: shown(s, g[1], g[2])),
        # The same overheads of nginx run in the full path's own rounds: what the core allowed at the time.
        ("nginx in the same rounds", "--:",
         lambda g: cells([c[k + "+"] for k in g[1]], g[2], sign=True) if latency(g[1]) else "–"),
        ("ratio", "--:", lambda g: " / ".join(f"{s[k] / n[k]:.2f}x" if s[k] and n[k] else "–" for k in g[1])),
        ("target", "---", lambda g: g[3]),
        ("met?", "---", lambda g: met(g[4]) if g[4] else "–"),
    ], goals)


def report(run: Run) -> str:
    """The two tables, then the notes: errors, PostgreSQL's CPU, the load, what happened on the way."""
    notes = []
    if errors := [f"{r.target} {r.kind}: {r.errors} of {r.requests}" for r in run.results if r.errors]:
        notes.append("⚠ Errors (non-2xx answers, socket errors, 10 s timeouts): " + "; ".join(errors) + ".")
    if pg := [f"{r.target} {r.kind} {r.pg_us:.0f}" for r in run.results if r.pg_us is not None]:
        notes.append("PostgreSQL's CPU for the ledger (its own processes and the benchmark database's backends, on "
                     "core 1; in neither CPU/req nor other work), µs per request: " + ", ".join(pg) + ".")
    if waits := [f"{r.target} {r.kind} {r.ledger_s:.0f} s" for r in run.results if r.ledger_s >= 1]:
        notes.append("The usage ledger's backlog after a run (rows queued and spooled while the database fell behind) "
                     "was written before the next run started, in: " + ", ".join(waits) + ".")
    if controlled := sorted({TARGETS[r.target] for r in run.results if r.controls}):
        notes.append("nginx ran in every paced and lockstep round of " + ", ".join(controlled) + ", just before the "
                     "direct call's run; *nginx in the same rounds* gives its overheads in the full path's rounds, "
                     "against that direct call (bench/method.md).")
    if run.load_at_start >= 1.0:
        notes.append(f"The 1-minute load average was {run.load_at_start:.2f} when measuring started (other work on "
                     "the machine): the figures are noisier than on a quiet machine.")
    return "\n".join(["Against issue 16's targets (the full path and nginx, in the same run):", "",
                      summary_table(run), "", "Every run:", "", results_table(run), "",
                      *(f"- {note}" for note in notes + run.notes)])


def write_docs(run: Run, text: str) -> None:
    """Replaces the section SECTION of docs/benchmarks.md, up to the next level-2 heading, keeping the rest:
    bench/method.md, the report, and the machine, binary and tools it was measured with."""
    def first_line(*argv) -> str:
        done = subprocess.run(argv, capture_output=True, text=True)
        return ((done.stdout + done.stderr).strip().splitlines() or ["?"])[0]

    cpu = re.search(r"^model name\s*:\s*(.*)$", read("/proc/cpuinfo"), re.M)
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(run.sluice)))
    tools = [first_line("wrk", "-v").split(" Copyright")[0], f"Python {sys.version.split()[0]} (the probe)"]
    machine = [f"- {os.cpu_count()} cores ({cpu.group(1) if cpu else '?'}), kernel {os.uname().release}; "
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 1-minute load average "
               f"{run.load_at_start:.2f} when measuring started, {os.getloadavg()[0]:.2f} at the end",
               f"- {first_line(run.sluice, '--version')}, binary {run.sluice} built {built} (this checkout: git "
               f"{first_line('git', '-C', ROOT, 'describe', '--always', '--dirty')})",
               "- " + "; ".join(tools + run.versions)]
    method = Template(read(ROOT / "bench/method.md")).safe_substitute(duration=run.args.duration).strip()
    section = "\n".join([SECTION, "", method, "", text, "", "### Machine and tools", "", *machine, ""])
    docs = read(DOCS)
    if (begin := docs.find(SECTION + "\n")) < 0:
        docs = docs.rstrip("\n") + "\n\n" + section
    else:
        end = docs.find("\n## ", begin)
        docs = docs[:begin] + section + ("" if end < 0 else docs[end:])
    DOCS.write_text(docs)
    log(f"wrote the section \"{SECTION[3:]}\" of docs/benchmarks.md")


# === the whole run ===

def hold_cores(run: Run) -> None:
    """The kernel's movable background threads off the proxy core and below the load (quiet_kernel_threads), and
    the autogroups off (autogroups_off), said in the report's notes."""
    pids = kdamond_pids()
    run.kernel_threads = quiet_kernel_threads(pids)
    if run.kernel_threads:
        run.notes.append(f"The guest kernel's DAMON threads (kdamond, {len(run.kernel_threads)}) ran on core 1 at idle "
                         "priority during the runs, as bench/method.md says (`--leave-priorities` leaves them be).")
    elif pids:
        run.notes.append("⚠ The guest kernel's DAMON threads (kdamond) could not be moved (not root?): their bursts "
                         "of 2 to 5 ms fall on either core.")
    run.autogroup = autogroups_off()
    if run.autogroup is not None:
        run.notes.append("The scheduler's autogroups were off during the runs, so that PostgreSQL at idle priority "
                         "yields the load core, as bench/method.md says (`--leave-priorities` leaves them on).")
    elif AUTOGROUP.exists() and AUTOGROUP.read_text().strip() != "0":
        run.notes.append("⚠ The scheduler's autogroups could not be turned off (not root?): PostgreSQL's backends, "
                         "at idle priority, still hold the load core for milliseconds of a flush.")


def bench(run: Run) -> None:
    """Checks what the benchmark needs, measures every selected target in order, prints and writes the report."""
    only = run.args.only
    for tool in ["wrk", "taskset"] + (["nginx"] if "nginx" in only else []):
        if not shutil.which(NGINX if tool == "nginx" else tool):
            raise BenchError(f"{tool} is missing: apt-get install -y {'util-linux' if tool == 'taskset' else tool}")
    if os.cpu_count() < 2:
        raise BenchError("the benchmark needs two cores: the proxy on core 0, the load on core 1")
    run.sluice = str(Path(run.args.sluice or ROOT / "target/release/sluice").resolve())
    if not os.access(run.sluice, os.X_OK):
        raise BenchError(f"{run.sluice} is not an executable file: build it (cargo build --release -p sluice) or "
                         "name one with --sluice")
    run.load_at_start = os.getloadavg()[0]
    os.sched_setaffinity(0, {LOAD_CORE})   # this program and its probe on the load core
    if not run.args.leave_priorities:
        hold_cores(run)
    direct(run)
    for name, step in (("nginx", nginx), ("bare", sluice_bare), ("full", sluice_full), ("litellm", litellm),
                       ("portkey", portkey)):
        if name not in only and not (name == "full" and "prompt" in only):
            continue
        if name in PEER_PROGRAMS and not PEER_PROGRAMS[name].exists():
            run.notes.append(f"{TARGETS[name]}: not installed under target/bench-peers (bench/method.md says how).")
            continue
        running = len(run.procs)
        try:
            step(run)
        except BenchError as err:   # a peer that does not start or answer is skipped, not fatal
            if name not in PEER_PROGRAMS:
                raise
            log(f"{name} skipped: {err}")
            run.notes.append(f"{TARGETS[name]}: skipped, {str(err).splitlines()[0]}")
            for proc in run.procs[running:]:
                stop(run, proc)
    text = report(run)
    print("\n" + text)
    if not run.args.no_docs:
        write_docs(run, text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sluice", metavar="PATH", help="the binary to measure (default: target/release/sluice)")
    parser.add_argument("--only", metavar="LIST", default=",".join(TARGETS),
                        help="comma-separated targets (default: %(default)s); direct always runs")
    parser.add_argument("--duration", type=int, default=10, metavar="SECS", help="length of each run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3-second runs and --no-docs: a smoke test")
    parser.add_argument("--no-docs", action="store_true", help="print the tables, leave docs/benchmarks.md alone")
    parser.add_argument("--leave-priorities", action="store_true",
                        help="leave the kernel's DAMON threads, PostgreSQL and the scheduler's autogroups as they are "
                             "(default: the first two yield the load core, the autogroups are off: bench/method.md)")
    parser.add_argument("--redis", metavar="URL", help="share the full path's budgets through the Redis at URL")
    args = parser.parse_args()
    args.only = args.only.split(",")
    if unknown := set(args.only) - set(TARGETS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; the targets are {', '.join(TARGETS)}")
    if args.quick:
        args.duration, args.no_docs = 3, True
    return args


def main() -> int:
    return guarded(Run(parse_args()), bench)


def guarded(run: Run, body) -> int:
    """BODY(run), then everything stopped and cleaned up however it ended; the exit status (1: a BenchError,
    130: interrupted)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # like Ctrl-C: stop everything and clean up
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    try:
        body(run)
        return 0
    except BenchError as err:
        log(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        close(run)


if __name__ == "__main__":
    sys.exit(main())
