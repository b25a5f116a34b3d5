#!/usr/bin/env python3
"""End-to-end proxy benchmark of Sluice: the latency, CPU and memory the gateway adds, next to calling the
upstream directly and next to nginx as a plain reverse proxy, measured in one run on one machine.

    python3 bench/bench.py                  # the full series (~4 min), written into docs/benchmarks.md
    python3 bench/bench.py --quick          # 3-second runs: a smoke test of the harness, docs untouched
    python3 bench/bench.py --only nginx,full --sluice /tmp/sluice

The upstream is `sluice simulate --reply-tokens 20`. The proxy under test runs alone on core 0; the
simulator, wrk, this program and (for the full path) PostgreSQL share core 1. Targets, in order:
direct (the simulator alone, the baseline: always runs), nginx, bare (Sluice, static key, SQLite ledger),
full (Sluice with a tenant's virtual key, budgets, prices, prompts, its ledger in a throwaway PostgreSQL
database on 127.0.0.1:5432), prompt (the full gateway's /v1/prompts/bench), and litellm and portkey when
installed under target/bench-peers. Each gets a check, a 2 s warm-up, then four runs: non-streaming and
streaming, paced (~1,000 req/s) and max (64 connections). The configurations are in bench/config/; what
each figure means is in bench/method.md, which heads the section written into docs/benchmarks.md.
"""

import argparse
import http.client
import json
import os
import re
import resource
import shlex
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
from string import Template
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "bench" / "config"
DOCS, SECTION = ROOT / "docs" / "benchmarks.md", "## End-to-end proxy benchmark"
PEERS, PEERS_HOWTO = ROOT / "target" / "bench-peers", "bench/method.md says how to install it"
PROXY_CORE, LOAD_CORE = 0, 1
# paced: 10 wrk connections and the probe's, each pausing 10 ms after every answer (~1,000 req/s)
PACED_CONNS, PACED_PAUSE_MS, MAX_CONNS, WARMUP_S = 11, 10, 64, 2
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
TARGETS = {"direct": "direct (simulator alone)", "nginx": "nginx (floor)", "bare": "Sluice bare proxy",
           "full": "Sluice full path", "prompt": "Sluice full, prompt template", "litellm": "LiteLLM proxy",
           "portkey": "Portkey gateway"}
# The full path's tenant and upstream-key budgets are set high: the checks run but never refuse. The
# price (gpt-4o's list price) makes every request costed and charged to the tenant.
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
    except OSError:
        return ""


def prose() -> str:
    """~500 tokens of English-like prose (about four bytes a token), the same on every run."""
    words = ("the river carries water from mountains to sea and every town along its banks depends on seasonal "
             "floods that bring fertile silt farmers measure rainfall carefully because harvests follow it").split()
    seed, out = 7, ""
    while len(out) < 2000:
        seed = (seed * 75 + 74) % 65537
        out += words[seed % len(words)] + (". " if seed % 11 == 0 else " ")
    return out


def request_bodies() -> dict[str, str]:
    """By file name: a chat completion for the model `bench-model` (the simulator, nginx, Portkey) and
    `bench` (Sluice, LiteLLM), and the prompt template's variables; each also streamed (NAME.stream.json)."""
    text, system = prose(), "You are a concise assistant. Answer in plain English."
    bodies = {}
    for model in ("bench-model", "bench"):
        bodies[f"chat-{model}"] = {"model": model, "messages": [{"role": "system", "content": system},
                                                                {"role": "user", "content": text}], "max_tokens": 64}
    bodies["prompt"] = {"variables": {"text": text}}
    return {f"{name}{suffix}.json": json.dumps(body | extra, separators=(",", ":"))
            for name, body in bodies.items() for suffix, extra in (("", {}), (".stream", {"stream": True}))}


# === measuring processes, from /proc ===

def proc_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from its third field (state) on: [1] is the parent, [11:15] utime, stime, cutime, cstime."""
    text = read(f"/proc/{pid}/stat")
    return text[text.rindex(")") + 2:].split() if text else None


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
    return sum(sum(map(int, f[11:15])) for p in process_tree(pid) if (f := proc_fields(p))) / CLK_TCK


def memory_mb(pid: int, key: str) -> float:
    """VmRSS (resident now) or VmHWM (peak), summed over a process tree."""
    return sum(int(line.split()[1]) for p in process_tree(pid)
               for line in read(f"/proc/{p}/status").splitlines() if line.startswith(key + ":")) / 1024


def core_busy() -> list[float]:
    """Busy seconds (user, nice, system, irq, softirq, steal) of core 0 and core 1 since boot."""
    busy = {f[0]: sum(int(f[i]) for i in (1, 2, 3, 6, 7, 8)) / CLK_TCK
            for f in map(str.split, read("/proc/stat").splitlines()) if f[0] in ("cpu0", "cpu1")}
    return [busy["cpu0"], busy["cpu1"]]


def own_cpu() -> float:
    """CPU of this program (the probe included) and of the children it has waited for (wrk)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(os.times()[:2]) + kids.ru_utime + kids.ru_stime


def postgres_pids() -> list[int]:
    return [int(e) for e in filter(str.isdigit, os.listdir("/proc")) if read(f"/proc/{e}/comm").strip() == "postgres"]


def pin_postgres(cores: set[int]) -> None:
    """Every thread of every PostgreSQL process onto CORES; backends forked later inherit the postmaster's."""
    for pid in postgres_pids():
        for tid in (os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []):
            try:
                os.sched_setaffinity(int(tid), cores)
            except OSError:
                pass


def postgres_cpu(database: str) -> float:
    """utime+stime of PostgreSQL's own processes and DATABASE's backends; other databases' are other work.
    A backend's title: "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" (or [local])."""
    total = 0
    for pid in postgres_pids():
        backend = re.match(r"postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])",
                           read(f"/proc/{pid}/cmdline").replace("\0", " "))
        if (not backend or backend.group(1) == database) and (fields := proc_fields(pid)):
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# === requests ===

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shell(argv: list[str], cwd=None, env: dict | None = None) -> str:
    """ARGV as a shell command for the docs, with its folder and how its environment differs from ours."""
    changes = [] if env is None else [f"-u {k}" for k in os.environ if k not in env] + [
        f"{k}={shlex.quote(v)}" for k, v in env.items() if os.environ.get(k) != v]
    command = ("env " + " ".join(changes) + " " if changes else "") + shlex.join(argv)
    return f"(cd {cwd} && {command})" if cwd else command


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Target:
    """What is measured: where the requests go, with which key and bodies, and whose CPU and memory count."""
    name: str                  # a key of TARGETS
    url: str
    auth: str
    body: Path                 # the non-streaming request body; the streaming one is body_stream
    body_stream: Path
    proc: subprocess.Popen     # its process (with its descendants)
    log: Path                  # shown when it misbehaves
    headers: dict[str, str] = field(default_factory=dict)

    def request_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.auth}", **self.headers}


class Probe(threading.Thread):
    """The paced runs' last connection: requests one after the other on one keep-alive connection, pausing
    like wrk's connections, each timed to its first byte (the status line and headers received)."""

    def __init__(self, target: Target, body: Path):
        super().__init__(daemon=True)
        self.url, self.body, self.headers = urlsplit(target.url), body.read_bytes(), target.request_headers()
        self.halt = threading.Event()
        self.ttfb_ms: list[float] = []
        self.answers = self.ok = self.errors = 0

    def run(self) -> None:
        conn = None
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=10)
                    conn.connect()
                start = time.perf_counter()
                conn.request("POST", self.url.path, self.body, self.headers)
                response = conn.getresponse()
                first = time.perf_counter()
                response.read()
                self.answers += 1
                if response.status == 200:
                    self.ok += 1
                    self.ttfb_ms.append((first - start) * 1000)
                else:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if conn:
                    conn.close()
                conn = None
            self.halt.wait(PACED_PAUSE_MS / 1000)
        if conn:
            conn.close()


# === results ===

def percentile(values: list[float], q: float) -> float | None:
    return sorted(values)[int((len(values) - 1) * q)] if values else None


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def cell(value: float | None, spec: str = ".2f", sign: bool = False) -> str:
    return "–" if value is None else format(value, ("+" if sign else "") + spec)


@dataclass
class Result:
    """One measured run of one target."""
    target: str
    stream: bool
    load: str                  # "paced" (~1,000 req/s) or "max" (64 connections, no pause)
    seconds: float             # wrk's duration of the run
    wall_s: float              # wall time between the CPU readings
    requests: int              # answers received, whatever their status
    errors: int                # non-2xx answers, socket errors, timeouts
    p50_ms: float | None       # wrk's latency percentiles over whole responses (None: not one answer)
    p90_ms: float | None
    p99_ms: float | None
    cpu_s: float               # the target's CPU time over the run
    pg_cpu_s: float            # PostgreSQL's, for the full path's ledger
    other_pct: list[float]     # CPU of processes not the benchmark's, on core 0 and core 1, in % of the run
    drain_s: float             # how long the target stayed busy after wrk stopped (requests in flight)
    ttfb_ms: list[float]       # the probe's times to first byte (paced streaming runs)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float | None:
        return self.cpu_s / self.requests * 1e6 if self.requests else None

    @property
    def kind(self) -> str:
        return f"{'streaming' if self.stream else 'non-streaming'} {self.load}"


# === the run ===

class Bench:
    """One benchmark run: the processes it started, the results so far, and what to undo at exit."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.only = args, set(args.only.split(",")) | {"direct"}
        self.tmp = Path(tempfile.mkdtemp(prefix="sluice-bench."))
        self.sluice = self.sim_url = self.database = self.pg_version = self.vkey = self.key_id = ""
        self.sim: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen] = []
        self.commands: list[str] = []          # for the docs: how to reproduce each step
        self.results: list[Result] = []
        self.memory: dict[str, tuple[float, float]] = {}   # target: (VmRSS after warm-up, VmHWM at the end), MB
        self.notes: list[str] = []
        self.versions: list[str] = []          # the peers'
        self.answered = defaultdict(int)       # 2xx answers each target gave, for the ledger check
        self.cut = defaultdict(int)            # connections wrk closed as a run stopped: up to an answer lost each
        self.pinned = False                    # whether PostgreSQL is on the load core
        self.redis_prefix = f"sluice-bench-{os.getpid()}"   # the full path's keys in --redis, deleted at exit
        self.load_at_start = 0.0

    # --- processes ---

    def start(self, name: str, core: int, argv: list[str], cwd=None, env=None) -> subprocess.Popen:
        """ARGV pinned to CORE, in a session of its own (its whole group is stopped), its output in TMP/NAME.log."""
        with open(self.tmp / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(["taskset", "-c", str(core), *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self.commands.append(shell(["taskset", "-c", str(core), *argv], cwd, env))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(10)
                return
            except ProcessLookupError:
                proc.wait()
                return
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, path: Path) -> str:
        return f"the end of {path.name}:\n" + ("\n".join(read(path).splitlines()[-20:]) or "(empty)")

    def wait_http(self, url: str, proc: subprocess.Popen, name: str, timeout: float) -> None:
        """Until URL answers anything; fails when the process exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                request("GET", url, timeout=2)
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
        what = f"exited with status {proc.returncode}" if proc.poll() is not None else f"did not answer in {timeout} s"
        raise BenchError(f"{name} {what} ({url})\n{self.log_tail(self.tmp / f'{name}.log')}")

    def wait_idle(self, pid: int) -> float:
        """Seconds until the target uses under 5% of a core over half a second (at most 60). wrk stops by
        closing its connections, and a slow target goes on with what it had accepted: that backlog must not
        fall into the next run."""
        start = time.monotonic()
        while True:
            before = cpu_seconds(pid)
            time.sleep(0.5)
            if cpu_seconds(pid) - before <= 0.025 or time.monotonic() - start > 60:
                return time.monotonic() - start - 0.5

    def close(self) -> None:
        """Stops every process, drops the throwaway database, gives PostgreSQL its cores back."""
        for proc in reversed(self.procs):
            self.stop(proc)
        if self.database:
            try:
                self.psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                log(f"dropped the database {self.database}")
            except BenchError as err:
                log(f"could not drop the database {self.database} ({err}): drop it by hand")
        if self.pinned:
            pin_postgres(set(range(os.cpu_count() or 1)))
        if self.args.redis and self.database:
            self.delete_redis_keys()
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def delete_redis_keys(self) -> None:
        """The full path's budget keys in the Redis of --redis, with redis-cli."""
        pattern = f"{self.redis_prefix}:*"
        try:
            cli = ["redis-cli", "-u", self.args.redis]
            keys = subprocess.run([*cli, "--scan", "--pattern", pattern], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.split()
            for start in range(0, len(keys), 500):
                subprocess.run([*cli, "DEL", *keys[start:start + 500]], capture_output=True, check=True, timeout=10)
            log(f"deleted the {len(keys)} Redis keys of the full path ({pattern})")
        except (OSError, subprocess.SubprocessError) as err:
            log(f"could not delete the Redis keys {pattern} ({err}): delete them by hand")

    # --- load ---

    def wrk(self, t: Target, body: Path, conns: int, pause_ms: int, seconds: int) -> dict[str, int]:
        """One wrk run against T from the load core: its counts, and its latency percentiles in µs."""
        env = {**os.environ, "BENCH_BODY": str(body), "BENCH_AUTH": t.auth, "BENCH_DELAY_MS": str(pause_ms),
               "BENCH_HEADERS": "|".join(f"{k}: {v}" for k, v in t.headers.items())}
        argv = ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s",
                "-s", str(CONFIG / "post.lua"), t.url]
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        found = re.search(r"^BENCH (.*)$", done.stdout, re.M)
        if done.returncode or not found:
            raise BenchError(f"wrk failed against {t.name}:\n{done.stdout}{done.stderr}")
        self.commands.append(shell(argv, env=env))
        stats = {k: int(v) for k, v in (pair.split("=") for pair in found.group(1).split())}
        self.answered[t.name] += stats["requests"] - stats["non2xx"]
        self.cut[t.name] += conns
        return stats

    def run_load(self, t: Target, stream: bool, load: str) -> Result:
        """One measured run: the target's CPU and PostgreSQL's, and the other work on each core."""
        body, paced, sim = t.body_stream if stream else t.body, load == "paced", self.sim.pid
        database = self.database if t.name in ("full", "prompt") else ""

        def readings():
            return [time.monotonic(), cpu_seconds(t.proc.pid), cpu_seconds(sim),
                    postgres_cpu(database) if database else 0.0, own_cpu(), *core_busy()]

        before = readings()
        probe = Probe(t, body) if paced else None
        if probe:
            probe.start()
        stats = self.wrk(t, body, PACED_CONNS - 1 if paced else MAX_CONNS, PACED_PAUSE_MS if paced else 0,
                         self.args.duration)
        if probe:
            probe.halt.set()
            probe.join()
            self.answered[t.name] += probe.ok
        wall, cpu, sim_cpu, pg_cpu, ours, core0, core1 = (a - b for a, b in zip(readings(), before))
        # Other work: each core's busy time less the benchmark's there (the target on core 0; the simulator,
        # wrk, this program and PostgreSQL on core 1). Clamped: /proc/stat brackets the run to a tick.
        other = [core0 - (cpu if t.proc.pid != sim else 0), core1 - sim_cpu - ours - pg_cpu]
        p50, p90, p99 = (stats[p] / 1000 if stats["requests"] else None for p in ("p50", "p90", "p99"))
        r = Result(target=t.name, stream=stream, load=load, seconds=stats["duration_us"] / 1e6, wall_s=wall,
                   requests=stats["requests"] + (probe.answers if probe else 0),
                   errors=stats["errors"] + (probe.errors if probe else 0), p50_ms=p50, p90_ms=p90, p99_ms=p99,
                   cpu_s=cpu, pg_cpu_s=pg_cpu, other_pct=[max(0.0, min(100.0, v / wall * 100)) for v in other],
                   drain_s=self.wait_idle(t.proc.pid), ttfb_ms=probe.ttfb_ms if probe and stream else [])
        log(f"  {t.name} {r.kind}: {r.rps:.0f} req/s, p99 {cell(r.p99_ms)} ms, CPU/req {cell(r.cpu_us, '.0f')} µs, "
            f"other work on cores 0/1 {r.other_pct[0]:.0f}%/{r.other_pct[1]:.0f}%, errors {r.errors}"
            + ("  ⚠ ERRORS" if r.errors else ""))
        return r

    def check_target(self, t: Target) -> None:
        """A completion and a stream must come back before any load: a misconfigured target fails loudly."""
        for body, expected in ((t.body, b'"choices"'), (t.body_stream, b"[DONE]")):
            try:
                status, reply = request("POST", t.url, body.read_bytes(), t.request_headers())
            except (OSError, http.client.HTTPException) as err:
                status, reply = 0, str(err).encode()
            if status != 200 or expected not in reply:
                raise BenchError(f"{t.name} answered {body.name} with {status}, not 200 and {expected.decode()}: "
                                 f"{reply[-600:].decode(errors='replace')}\n{self.log_tail(t.log)}")
            self.answered[t.name] += 1

    def measure(self, t: Target) -> None:
        """The whole series against one target."""
        log(f"measuring {t.name}")
        self.check_target(t)
        self.wrk(t, t.body, MAX_CONNS, 0, WARMUP_S)   # warm-up: pools, allocator, caches; not recorded
        self.wait_idle(t.proc.pid)
        rss = memory_mb(t.proc.pid, "VmRSS")
        for stream in (False, True):
            for load in ("paced", "max"):
                self.results.append(self.run_load(t, stream, load))
        self.memory[t.name] = (rss, memory_mb(t.proc.pid, "VmHWM"))

    # --- targets ---

    def target(self, name: str, url: str, auth: str, stem: str, proc, log_file: Path, headers=None) -> Target:
        return Target(name, url, auth, self.tmp / f"{stem}.json", self.tmp / f"{stem}.stream.json", proc, log_file,
                      headers or {})

    def start_simulator(self) -> None:
        port = free_port()
        self.sim_url = f"http://127.0.0.1:{port}"
        self.sim = self.start("simulator", LOAD_CORE, [self.sluice, "simulate", "--listen", f"127.0.0.1:{port}",
                                                       "--reply-tokens", "20"])
        self.wait_http(f"{self.sim_url}/healthz", self.sim, "simulator", 20)

    def direct(self) -> None:
        self.measure(self.target("direct", f"{self.sim_url}/v1/chat/completions", "sk-upstream", "chat-bench-model",
                                 self.sim, self.tmp / "simulator.log"))

    def nginx(self) -> None:
        folder, port = self.tmp / "nginx", free_port()
        folder.mkdir()
        conf = Template(read(CONFIG / "nginx.conf")).substitute(dir=folder, sim_port=urlsplit(self.sim_url).port,
                                                                port=port)
        (folder / "nginx.conf").write_text(conf)
        # -e stderr: what goes wrong before the configuration's error_log applies lands in nginx.log.
        proc = self.start("nginx", PROXY_CORE, [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(folder),
                                                "-c", str(folder / "nginx.conf"), "-e", "stderr"])
        try:
            self.wait_http(f"http://127.0.0.1:{port}/healthz", proc, "nginx", 20)
            self.measure(self.target("nginx", f"http://127.0.0.1:{port}/v1/chat/completions", "sk-upstream",
                                     "chat-bench-model", proc, folder / "error.log"))
        finally:
            self.stop(proc)

    def sluice_env(self) -> dict[str, str]:
        """The environment without the variables that would override the generated configuration."""
        drop = {"SLUICE_LISTEN", "SLUICE_DATABASE_URL", "SLUICE_CONFIG", "RUST_LOG"}
        return {k: v for k, v in os.environ.items() if k not in drop}

    def start_gateway(self, variant: str) -> tuple[subprocess.Popen, str]:
        """Writes bench/config/sluice.toml for the bare or the full gateway into a folder of its own (relative
        defaults such as the SQLite ledger land there), makes the full path's tenant and key, starts it."""
        folder, port, full = self.tmp / f"sluice-{variant}", free_port(), variant == "full"
        (folder / "config").mkdir(parents=True)
        if (ROOT / "config/prices.toml").exists():
            (folder / "config/prices.toml").symlink_to(ROOT / "config/prices.toml")
        settings = {"what": "bare proxy", "port": port, "sim": self.sim_url, "store": "# [store]: the defaults",
                    "keys": '["sk-bench"]', "budgets": "", "prompts": self.tmp / "no-prompts"}
        if full:
            store = f'[store]\nurl = "postgres://{PG["user"]}@{PG["host"]}:{PG["port"]}/{self.database}"'
            if self.args.redis:
                store += f'\n\n[redis]\nurl = "{self.args.redis}"\nprefix = "{self.redis_prefix}"'
            settings |= {"what": "full path (a tenant and its virtual key, budgets, prices, usage ledger in "
                                 "postgres, prompt templates)", "store": store, "budgets": FULL_BUDGETS,
                         "keys": "[]   # virtual keys only: sluice keys create", "prompts": CONFIG / "prompts"}
        (folder / "sluice.toml").write_text(Template(read(CONFIG / "sluice.toml")).substitute(settings))
        if full:
            self.make_tenant_and_key(folder)
        proc = self.start(f"sluice-{variant}", PROXY_CORE, [self.sluice, "--config", str(folder / "sluice.toml"),
                                                            "serve"], folder, self.sluice_env())
        self.wait_http(f"http://127.0.0.1:{port}/healthz", proc, f"sluice-{variant}", 30)
        return proc, f"http://127.0.0.1:{port}"

    def sluice_bare(self) -> None:
        proc, base = self.start_gateway("bare")
        try:
            self.measure(self.target("bare", f"{base}/v1/chat/completions", "sk-bench", "chat-bench", proc,
                                     self.tmp / "sluice-bare.log"))
        finally:
            self.stop(proc)

    def sluice_full(self) -> None:
        """The full path, then its prompt template on the same gateway, then the ledger check."""
        self.create_database()
        pin_postgres({LOAD_CORE})   # off the gateway's core before anything connects to it
        self.pinned = True
        self.commands.append(f"for p in $(pgrep -x postgres); do taskset -a -cp {LOAD_CORE} $p; done")
        proc, base = self.start_gateway("full")
        if self.args.redis:
            self.notes.append(f"The full path shared its budgets through the Redis at {self.args.redis} (`--redis`).")
        log_file = self.tmp / "sluice-full.log"
        try:
            if "full" in self.only:
                self.measure(self.target("full", f"{base}/v1/chat/completions", self.vkey, "chat-bench", proc,
                                         log_file))
            if "prompt" in self.only:
                self.measure(self.target("prompt", f"{base}/v1/prompts/bench", self.vkey, "prompt", proc, log_file))
            self.wait_idle(proc.pid)
            self.ledger_check(base)
        finally:
            self.stop(proc)
            pin_postgres(set(range(os.cpu_count() or 1)))
            self.pinned = False

    def peer(self, t: Target, health: str, timeout: float) -> None:
        """A peer that does not start or answer is skipped with a note, not fatal."""
        try:
            self.wait_http(health, t.proc, t.name, timeout)
            self.measure(t)
        except BenchError as err:
            log(f"{t.name} skipped: {err}")
            self.notes.append(f"{TARGETS[t.name]}: skipped, {str(err).splitlines()[0]} (`--keep-tmp` keeps its "
                              "log)")
        finally:
            self.stop(t.proc)

    def litellm(self) -> None:
        """LiteLLM's proxy: one uvicorn worker; no database or cache from the environment; the model cost map
        bundled with the package (no fetch at start); no telemetry, no admin UI; errors only in its log."""
        venv = PEERS / "venv"
        if not (venv / "bin/litellm").exists():
            self.notes.append(f"LiteLLM: not installed under target/bench-peers ({PEERS_HOWTO})")
            return
        folder, port = self.tmp / "litellm", free_port()
        folder.mkdir()
        (folder / "config.yaml").write_text(Template(read(CONFIG / "litellm.yaml")).substitute(sim=self.sim_url))
        drop = {"DATABASE_URL", "DIRECT_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL"}
        env = {k: v for k, v in os.environ.items() if k not in drop} | {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY_DISABLED": "True", "DISABLE_ADMIN_UI": "True",
            "LITELLM_LOG": "ERROR"}
        proc = self.start("litellm", PROXY_CORE, [str(venv / "bin/litellm"), "--config", str(folder / "config.yaml"),
                                                  "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                          folder, env)
        base = f"http://127.0.0.1:{port}"
        # Its start-up imports a lot: 10-30 s on a quiet machine, more on a busy one.
        self.peer(self.target("litellm", f"{base}/v1/chat/completions", "sk-bench", "chat-bench", proc,
                              self.tmp / "litellm.log"), f"{base}/health/liveliness", 300)
        installed = next(venv.glob("lib/python*/site-packages/litellm-*.dist-info"), None)
        self.versions.append(f"LiteLLM {installed.name.split('-')[1].removesuffix('.dist-info') if installed else '?'}")

    def portkey(self) -> None:
        """Portkey's gateway on Node, with no configuration: each request names the provider and the upstream
        in its headers; --headless: no console."""
        package = PEERS / "node_modules/@portkey-ai/gateway"
        if not (package / "build/start-server.js").exists() or not shutil.which("node"):
            self.notes.append(f"Portkey: not installed under target/bench-peers ({PEERS_HOWTO})")
            return
        port = free_port()
        proc = self.start("portkey", PROXY_CORE, ["node", str(package / "build/start-server.js"), f"--port={port}",
                                                  "--headless"], self.tmp)
        headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{self.sim_url}/v1"}
        self.peer(self.target("portkey", f"http://127.0.0.1:{port}/v1/chat/completions", "sk-upstream",
                              "chat-bench-model", proc, self.tmp / "portkey.log", headers),
                  f"http://127.0.0.1:{port}/", 60)
        version = json.loads(read(package / "package.json") or "{}").get("version", "?")
        self.versions.append(f"Portkey gateway {version}")

    # --- the full path's store ---

    def psql(self, sql: str, database: str = "postgres", **variables: str) -> str:
        """SQL as the superuser, from stdin so that :'name' binds VARIABLES; fields separated by |."""
        argv = ["psql", "-X", "-w", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", PG["host"], "-p", PG["port"],
                "-U", PG["user"], "-d", database, *(f"-v{k}={v}" for k, v in variables.items())]
        done = subprocess.run(argv, input=sql, capture_output=True, text=True,
                              env=os.environ | {"PGCONNECT_TIMEOUT": "5"})
        if done.returncode:
            raise BenchError(done.stderr.strip() or f"psql exited with {done.returncode}")
        return done.stdout.strip()

    def create_database(self) -> None:
        where, alternative = f"PostgreSQL at {PG['host']}:{PG['port']} as user {PG['user']}", \
            "; or leave the full path out: --only direct,nginx,bare"
        if not shutil.which("psql"):
            raise BenchError(f"psql is missing (apt-get install -y postgresql-client): the full path keeps its "
                             f"ledger in {where}{alternative}")
        try:
            self.pg_version = self.psql("SHOW server_version").split()[0]
        except BenchError as err:
            raise BenchError(f"{where} is not reachable ({err}): the full path keeps its ledger there, start "
                             f"it{alternative}") from None
        name = f"sluice_bench_{os.getpid()}"
        self.psql(f'CREATE DATABASE "{name}"')
        self.database = name
        self.commands.append(f"psql -h {PG['host']} -U {PG['user']} -d postgres -c 'CREATE DATABASE {name}'"
                             "   # dropped at exit")
        log(f"created the database {name} for the full path's usage ledger")

    def make_tenant_and_key(self, folder: Path) -> None:
        """The tenant `bench` and its virtual key, made with the CLI before the gateway starts."""
        for args in (["tenants", "create", "bench", *TENANT_ARGS], ["keys", "create", "bench", "--name", "bench"]):
            argv = [self.sluice, "--config", str(folder / "sluice.toml"), *args]
            done = subprocess.run(argv, cwd=folder, env=self.sluice_env(), capture_output=True, text=True)
            if done.returncode:
                raise BenchError(f"sluice {' '.join(args[:2])} failed:\n{done.stdout}{done.stderr}")
            self.commands.append(shell(argv, folder, self.sluice_env()))
        key, key_id = (re.search(rf"^{f}:\s*(\S+)", done.stdout, re.M) for f in ("key", "id"))
        if not (key and key_id):
            raise BenchError(f"no key in the output of sluice keys create:\n{done.stdout}")
        self.vkey, self.key_id = key.group(1), key_id.group(1)
        self.commands[-1] += "   # prints key: $BENCH_KEY"

    def metrics(self, base: str) -> dict[str, float]:
        """The gateway's /metrics, each metric's samples summed."""
        sums = defaultdict(float)
        for line in request("GET", f"{base}/metrics")[1].decode().splitlines():
            if line and not line.startswith("#"):
                sums[re.match(r"[\w:]+", line).group(0)] += float(line.rsplit(" ", 1)[1])
        return sums

    def ledger_check(self, base: str) -> None:
        """One ledger row per upstream call, each with the tenant's key, none spooled or failed, and a status-200
        row per answer received (plus at most one per connection wrk closed as a run stopped)."""
        previous = None
        for _ in range(60):   # the writer sends a batch every 200 ms or 500 rows: until its queue is empty
            m = self.metrics(base)
            counts = [m[f"sluice_ledger_{k}"] for k in ("queue_depth", "rows_written_total", "rows_spooled_total")]
            if counts[0] == 0 and counts == previous:
                break
            previous = counts
            time.sleep(0.5)
        written, spooled, failed, calls, failovers = (int(m[k]) for k in (
            "sluice_ledger_rows_written_total", "sluice_ledger_rows_spooled_total", "sluice_ledger_write_errors_total",
            "sluice_upstream_attempts_total", "sluice_failovers_total"))
        rows, ok, cut_rows, keyed, cost = map(int, self.psql(
            "SELECT count(*), count(*) FILTER (WHERE status = 200), count(*) FILTER (WHERE status = 499), "
            "count(*) FILTER (WHERE tenant = 'bench' AND key_id = :'key_id'), coalesce(sum(cost_micros), 0) "
            "FROM usage_ledger", self.database, key_id=self.key_id).split("|"))
        answered, closed = self.answered["full"] + self.answered["prompt"], self.cut["full"] + self.cut["prompt"]
        good = (rows == calls == written == keyed and spooled == failed == failovers == 0
                and answered <= ok <= answered + closed)
        self.notes.append(
            f"{'' if good else '⚠ MISMATCH: '}Usage ledger of the full path (PostgreSQL {self.pg_version}; every "
            f"request of the gateway's life: checks, warm-ups, runs): {rows} rows for {calls} upstream calls "
            f"({failovers} failovers); {written} written, {spooled} spooled, {failed} write errors; {keyed} with "
            f"the tenant's key; ${cost / 1e6:.2f} charged. {ok} with status 200 for {answered} answers received (wrk "
            f"does not count an answer in flight as it stops: up to {closed} more), {cut_rows} with 499 (requests "
            "cut as a run stopped).")
        log(f"  ledger: {rows} rows for {calls} upstream calls, {ok} with status 200 for {answered} answers: "
            + ("consistent" if good else "MISMATCH (see the notes)"))

    # --- report ---

    def find(self, target: str, stream: bool, load: str) -> Result | None:
        return next((r for r in self.results if (r.target, r.stream, r.load) == (target, stream, load)), None)

    def short_of_pace(self, r: Result) -> bool:
        """A paced run under 90% of the direct call's paced rate: its figures are at a lower rate."""
        return r.load == "paced" and r.target != "direct" and r.rps < 0.9 * self.find("direct", r.stream, "paced").rps

    def results_table(self) -> str:
        """Every run of every target, one row each; Δ: a paced run's overhead against the direct call's."""
        rows = ["| target | stream | load | req/s | p50 ms | p90 ms | p99 ms | Δp50 ms | Δp99 ms | CPU/req µs "
                "| core used | TTFB p50/p99 ms | ΔTTFB p50/p99 ms | RSS warm/peak MB | errors | other work core 0/1 |",
                "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in self.results:
            base = self.find("direct", r.stream, r.load)
            delta = r.load == "paced" and r.target != "direct"
            ttfb = [percentile(r.ttfb_ms, q) for q in (0.5, 0.99)]
            ttfb_delta = [diff(t, percentile(base.ttfb_ms, q)) for t, q in zip(ttfb, (0.5, 0.99))]
            cpu = (cell(r.cpu_us, ".0f") + (" (simulator)" if r.target == "direct" else "")
                   + (" ‡" if r.drain_s >= 1 else ""))
            other = f"{r.other_pct[0]:.0f}% / {r.other_pct[1]:.0f}%" + (" ⚠" if max(r.other_pct) > 10 else "")
            cells = [
                TARGETS[r.target], "yes" if r.stream else "no",
                f"{PACED_CONNS} conns, {PACED_PAUSE_MS} ms pause" if r.load == "paced" else f"{MAX_CONNS} conns",
                f"{r.rps:.0f}" + (" †" if self.short_of_pace(r) else ""), cell(r.p50_ms), cell(r.p90_ms),
                cell(r.p99_ms), cell(diff(r.p50_ms, base.p50_ms) if delta else None, sign=True),
                cell(diff(r.p99_ms, base.p99_ms) if delta else None, sign=True), cpu, f"{r.cpu_s / r.wall_s:.0%}",
                " / ".join(map(cell, ttfb)) if r.ttfb_ms else "–",
                " / ".join(cell(d, sign=True) for d in ttfb_delta) if r.ttfb_ms and delta else "–",
                " / ".join(cell(mb, ".1f") for mb in self.memory.get(r.target, (None, None))),
                f"**{r.errors}**" if r.errors else "0", other]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def figures(self, target: str) -> dict[str, float | None]:
        """The summary's figures of one target; None where it was not measured."""
        ns, st = self.find(target, False, "paced"), self.find(target, True, "paced")
        ns_max, st_max = self.find(target, False, "max"), self.find(target, True, "max")
        return {"cpu": ns and ns.cpu_us, "cpu_stream": st and st.cpu_us, "rps": ns_max and ns_max.rps,
                "streams": st_max and st_max.rps, "p99": ns and ns.p99_ms,
                "ttfb99": st and percentile(st.ttfb_ms, 0.99), "stream99": st and st.p99_ms,
                "rss": self.memory[target][0] if target in self.memory else None}

    def summary_table(self) -> str:
        """Issue 16's targets: the full path against nginx, measured in the same run. Latencies come with their
        overhead against the direct call, which is what their targets are about."""
        d, n, s = (self.figures(t) for t in ("direct", "nginx", "full"))

        def verdict(met: bool | None) -> str:
            return "–" if met is None else "yes" if met else "**no**"

        def meets(value: float | None, limit: float | None, strict: bool = False) -> bool | None:
            return None if value is None or limit is None else value < limit if strict else value <= limit

        def overhead(*keys: str) -> float | None:
            overheads = [diff(s[k], d[k]) for k in keys]
            return None if None in overheads else max(overheads)

        def row(label: str, keys: list[str], spec: str, goal: str = "", met: bool | None = None) -> str:
            def value(f):
                text = " / ".join(cell(f[k], spec) for k in keys)
                overheads = [diff(f[k], d[k]) for k in keys]
                latency = keys[0] in ("p99", "ttfb99", "stream99")   # shown with its overhead
                return text + (" (" + " / ".join(cell(o, spec, sign=True) for o in overheads) + ")"
                               if latency and None not in overheads else "")
            ratio = " / ".join(f"{s[k] / n[k]:.2f}x" if s[k] and n[k] else "–" for k in keys)
            return f"| {label} | {value(n)} | {value(s)} | {ratio} | {goal} | {verdict(met)} |"

        return "\n".join([
            "| | nginx | Sluice full path | ratio | target | met? |", "|---|--:|--:|--:|---|---|",
            row("CPU per non-streaming request, µs (~1,000 req/s)", ["cpu"], ".0f", "≤ 2.5x nginx",
                meets(s["cpu"], n["cpu"] and 2.5 * n["cpu"])),
            row("CPU per 20-chunk stream, µs (~1,000 req/s)", ["cpu_stream"], ".0f", "≤ 2.5x nginx",
                meets(s["cpu_stream"], n["cpu_stream"] and 2.5 * n["cpu_stream"])),
            row("max req/s, non-streaming (64 connections)", ["rps"], ".0f"),
            row("max streams/s (64 connections)", ["streams"], ".0f"),
            row("p99 at ~1,000 req/s, non-streaming, ms (overhead vs direct)", ["p99"], ".2f", "overhead < 0.5 ms",
                meets(overhead("p99"), 0.5, strict=True)),
            row("stream TTFB p99 / full p99 at ~1,000 req/s, ms (overheads)", ["ttfb99", "stream99"], ".2f",
                "overheads < 0.5 ms", meets(overhead("ttfb99", "stream99"), 0.5, strict=True)),
            row("resident memory after warm-up, MB", ["rss"], ".1f", "≤ 40 MB", meets(s["rss"], 40))])

    def run_notes(self) -> list[str]:
        """What the marks mean where some run carries them, the runs with errors, and the notes gathered."""
        notes = []
        if any(max(r.other_pct) > 10 for r in self.results):
            notes.append("⚠: other processes (not the benchmark's) took more than 10% of core 0 or 1 during the run: "
                         "its figures are disturbed, latency and throughput most.")
        if any(map(self.short_of_pace, self.results)):
            notes.append("†: the paced run reached under 90% of the direct call's paced rate (each connection waits "
                         "for its answer before its pause): its figures are at the rate shown, not ~1,000 req/s.")
        if any(r.drain_s >= 1 for r in self.results):
            notes.append("‡: the target was still busy a second or more after the run: the requests in flight at its "
                         "end used CPU that is counted while they are not, so CPU/req is high by up to conns/requests.")
        if errors := [f"{r.target} {r.kind}: {r.errors} of {r.requests}" for r in self.results if r.errors]:
            notes.append("⚠ Errors (non-2xx answers, socket errors, 10 s timeouts): " + "; ".join(errors) + ".")
        if pg := [f"{r.target} {r.kind} {r.pg_cpu_s / r.requests * 1e6:.0f}" for r in self.results
                  if r.pg_cpu_s and r.requests]:
            notes.append("PostgreSQL's CPU for the ledger (its own processes and the benchmark database's backends, "
                         "on core 1; in neither CPU/req nor other work), µs per request: " + ", ".join(pg) + ".")
        if self.load_at_start >= 1.0:
            notes.append(f"The 1-minute load average was {self.load_at_start:.2f} when measuring started (other work "
                         "on the machine): the figures are noisier than on a quiet machine.")
        return notes + self.notes

    def machine(self) -> list[str]:
        """The machine, the date and the tools' versions, for the docs."""
        def output(*argv: str) -> str:
            done = subprocess.run(argv, capture_output=True, text=True)
            return ((done.stdout + done.stderr).strip().splitlines() or ["?"])[0]

        cpu = re.search(r"^model name\s*:\s*(.*)$", read("/proc/cpuinfo"), re.M)
        memory = int(re.search(r"^MemTotal:\s*(\d+)", read("/proc/meminfo"), re.M).group(1)) / 2**20
        commit = output("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
        if output("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no") != "?":
            commit += ", with uncommitted changes"
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(self.sluice)))
        tools = [output("wrk", "-v").split(" Copyright")[0], output("nginx", "-v"),
                 f"Python {sys.version.split()[0]} (the probe)", *self.versions]
        if self.pg_version:
            tools.append(f"PostgreSQL {self.pg_version}")
        return [f"- {os.cpu_count()} cores ({cpu.group(1) if cpu else '?'}), {memory:.0f} GiB memory, "
                f"kernel {os.uname().release}",
                f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 1-minute load average "
                f"{self.load_at_start:.2f} when measuring started, {os.getloadavg()[0]:.2f} at the end",
                f"- {output(self.sluice, '--version')} (git {commit}), binary {self.sluice} built {built}",
                "- " + "; ".join(tools)]

    def write_docs(self, report: str) -> None:
        """Replaces the section SECTION of docs/benchmarks.md, up to the next level-2 heading, keeping the rest."""
        commands = "\n".join(self.commands).replace(str(self.tmp), "$TMP").replace(f"{ROOT}/", "")
        commands = commands.replace(self.vkey, "$BENCH_KEY") if self.vkey else commands
        method = Template(read(ROOT / "bench/method.md")).safe_substitute(duration=self.args.duration).strip()
        section = [SECTION, "", method, "", report, "", "### Machine and tools", "", *self.machine(), "",
                   "### Commands", "", "```sh", commands, "```", ""]
        out, skipping, fenced, done = [], False, False, False
        for line in read(DOCS).splitlines():
            fenced ^= line.startswith(("```", "~~~"))
            if line.startswith("## ") and not fenced:
                skipping = line == SECTION
                if skipping:
                    out, done = out + section, True
            if not skipping:
                out.append(line)
        DOCS.write_text("\n".join(out if done else out + [""] + section) + "\n")
        log(f"wrote the section \"{SECTION[3:]}\" of docs/benchmarks.md")

    # --- the whole run ---

    def find_sluice(self) -> str:
        """The binary to measure: --sluice, or target/release/sluice, built when missing."""
        if self.args.sluice:
            if not os.access(self.args.sluice, os.X_OK):
                raise BenchError(f"--sluice {self.args.sluice}: not an executable file")
            return str(Path(self.args.sluice).resolve())
        path = ROOT / "target/release/sluice"
        if not path.exists():
            log("target/release/sluice is missing: cargo build --release -p sluice")
            if subprocess.run(["cargo", "build", "--release", "-p", "sluice"], cwd=ROOT).returncode:
                raise BenchError("cargo build --release -p sluice failed (its output is above)")
        return str(path)

    def run(self) -> None:
        for tool, package in (("wrk", "wrk"), ("taskset", "util-linux"), ("nginx", "nginx")):
            found = shutil.which(tool) or tool == "nginx" and os.access("/usr/sbin/nginx", os.X_OK)
            if not found and (tool != "nginx" or "nginx" in self.only):
                raise BenchError(f"{tool} is missing: apt-get install -y {package}")
        if (os.cpu_count() or 1) < 2:
            raise BenchError("the benchmark needs two cores: the proxy on core 0, the load on core 1")
        self.sluice = self.find_sluice()
        wait_for_quiet(self.args.wait_quiet)
        self.load_at_start = os.getloadavg()[0]
        os.sched_setaffinity(0, {LOAD_CORE})   # this program and its probe on the load core
        for name, body in request_bodies().items():
            (self.tmp / name).write_text(body)
        self.start_simulator()
        self.direct()
        for name, step in (("nginx", self.nginx), ("bare", self.sluice_bare), ("full", self.sluice_full),
                           ("litellm", self.litellm), ("portkey", self.portkey)):
            if name in self.only or (name == "full" and "prompt" in self.only):
                step()
        report = "\n".join(["Against issue 16's targets (the full path and nginx, in the same run):", "",
                            self.summary_table(), "", "Every run:", "", self.results_table(), "",
                            *(f"- {note}" for note in self.run_notes())])
        print("\n" + report)
        if not self.args.no_docs:
            self.write_docs(report)


def wait_for_quiet(max_wait: int) -> None:
    """Up to MAX_WAIT seconds for the 1-minute load average to drop below 1.0 (recorded in the notes anyway)."""
    waited = 0
    while (load := os.getloadavg()[0]) >= 1.0 and waited < max_wait:
        log(f"1-minute load average {load:.2f}: waiting for it to drop below 1.0 ({waited} of {max_wait} s)")
        time.sleep(30)
        waited += 30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sluice", metavar="PATH", help="the binary to measure (default: target/release/sluice, "
                        "built with `cargo build --release -p sluice` when missing)")
    parser.add_argument("--only", metavar="LIST", default=",".join(TARGETS),
                        help="comma-separated targets (default: %(default)s); direct always runs")
    parser.add_argument("--duration", type=int, default=10, metavar="SECS", help="length of each run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3-second runs and --no-docs: a smoke test")
    parser.add_argument("--no-docs", action="store_true", help="print the tables, leave docs/benchmarks.md alone")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (configurations, logs)")
    parser.add_argument("--redis", metavar="URL", help="share the full path's budgets through the Redis at URL")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECS",
                        help="first wait up to SECS for the 1-minute load average to drop below 1.0")
    args = parser.parse_args()
    if unknown := set(args.only.split(",")) - set(TARGETS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; the targets are {', '.join(TARGETS)}")
    if args.quick:
        args.duration, args.no_docs = 3, True
    return args


def main() -> int:
    args = parse_args()
    bench = Bench(args)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        bench.run()
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
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
