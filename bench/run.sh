#!/usr/bin/env bash
# End-to-end proxy benchmark of Sluice (issue 7, part 1): what the gateway adds to a request's latency and
# what it costs in CPU and memory, next to calling the upstream directly and next to nginx as a plain
# reverse proxy (the floor), all measured in one run on one machine.
#
#   bash bench/run.sh [options]          # from the repository root: about 4 minutes of measuring with the
#                                        # defaults (plus the build, and up to 15 minutes waiting for a quiet
#                                        # machine; each installed peer adds about a minute, LiteLLM's
#                                        # start-up up to a minute more)
#
# What it does:
#   1. Installs wrk and nginx from Debian (apt-get) when missing. wrk is the load generator (no compile
#      needed); oha is used only if it is already installed, for one extra figure: p99 at a fixed 1,000
#      requests/s (`oha -q 1000`). LiteLLM and Portkey run only when already installed (see --with-peers).
#   2. Builds `cargo build --release -p sluice` and uses target/release/sluice.
#   3. Starts the upstream, `sluice simulate --reply-tokens 20` (20 chunks per stream, no added latency),
#      and measures it alone first ("direct"): it must not be the bottleneck.
#   4. Pins the proxy under test to core 0 (`taskset -c 0`), the simulator and the load generator to
#      core 1, and measures each target in turn:
#        direct                the simulator itself, the baseline every overhead is taken against
#        nginx                 plain reverse proxy: keepalive upstream, proxy_buffering off (the floor)
#        sluice bare           one openai_compatible provider, a static key from `[auth] keys`, no budgets
#                              (the usage ledger goes to the store's default, a SQLite file in its folder)
#        sluice full           everything on, as issue 7 defines the full path: a tenant with rpm, tpm and a
#                              USD budget (set high, so the checks run but never refuse) and a virtual key
#                              of that tenant, both made with the CLI before the gateway starts (`sluice
#                              tenants create bench ...`, `sluice keys create bench`), the requests carrying
#                              that key; token counting for the budgets; rpm/tpm budgets on the upstream key;
#                              a price on the deployment, so every request is costed and charged to the
#                              tenant's budget; a prompt template registry; and the usage ledger in
#                              PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth), in a database made
#                              for the run (sluice_bench_PID) and dropped at exit. PostgreSQL's processes are
#                              pinned to core 1 during it (restored to every core at exit), with the simulator
#                              and the load generator, and their CPU per request is reported in a note. When
#                              PostgreSQL is not reachable the ledger goes to a SQLite file, and a note says
#                              so. After the series the ledger is checked: rows written, spooled and write
#                              errors (GET /metrics), and the rows in usage_ledger against the gateway's
#                              upstream calls and the answers the load generator received.
#        sluice full, prompt   POST /v1/prompts/bench on the same gateway and key: the template rendered with
#                              a ~500-token variable
#        litellm               LiteLLM's proxy (Python, uvicorn, one worker), when installed: a config.yaml with
#                              one `openai/bench-model` deployment on the simulator, a master key, no database,
#                              LITELLM_LOG=ERROR, the bundled model cost map (no fetch from the internet)
#        portkey               Portkey's gateway (Node, `build/start-server.js --headless`), when installed:
#                              no config, the provider and upstream in each request's headers
#                              (x-portkey-provider: openai, x-portkey-custom-host: the simulator's /v1)
#                              A peer's CPU and peak RSS are summed over its process tree.
#   5. Load: a chat completion POST with a ~500-token prompt (wrk with a Lua script for the body and the
#      Authorization header), non-streaming and streaming (wrk measures whole responses):
#        paced   11 connections, each waiting 10 ms after every answer: about 1,000 requests/s, the
#                latency and overhead figures (plain wrk cannot hold an exact rate; wrk2 is not in Debian)
#        max     64 connections, no pause: the most requests/s the target serves
#      Per target: requests/s, p50/p90/p99 latency, overhead versus direct (p50 and p99, paced runs),
#      CPU per request of the target process (utime+stime from /proc/PID/stat before and after the run,
#      divided by the requests; for direct it is the simulator's), the share of its core it used, peak
#      RSS (VmHWM), and for streams the time to first byte (`curl -w %{time_starttransfer}` over 200
#      sequential requests on one keep-alive connection, p50/p99, and the overhead versus direct).
#      Before each run the target must be idle: a slow one (LiteLLM) goes on serving the requests that
#      were in flight when wrk stopped. A paced run under 90% of the direct call's paced rate is marked †
#      (its figures are at the rate it reached); a run after which the target was still busy for a second
#      or more is marked ‡ and its CPU/req given as a range (the requests in flight at the end used CPU
#      that is in the run but are not counted).
#   6. Prints one Markdown table and writes it with the machine, the date, the tool versions and the exact
#      commands into docs/benchmarks.md, section "End-to-end proxy benchmark" (replaced on every run;
#      other sections are kept).
#   7. Stops every process it started (trap on EXIT), drops the full path's throwaway database, puts
#      PostgreSQL's processes back on every core, and deletes its temporary folder.
#
# Options:
#   --duration SECS       length of each measured run (default 10)
#   --quick               3-second runs, 50 TTFB requests, no waiting for a quiet machine, docs untouched:
#                         a smoke test of the harness, not numbers to publish
#   --ttfb-requests N     sequential requests for the time to first byte (default 200)
#   --paced-conns N       connections of the paced runs (default 11)
#   --paced-delay-ms N    pause of each connection after each answer in the paced runs (default 10)
#   --max-conns N         connections of the max-throughput runs (default 64)
#   --log-level LEVEL     the gateway's log level (default info, as shipped; logs go to a file)
#   --full-store KIND     where the full path's usage ledger goes: postgres (a throwaway database on
#                         127.0.0.1:5432; fail if PostgreSQL is not reachable) or sqlite (a file in the
#                         gateway's temporary folder). Default: postgres, falling back to sqlite with a note
#                         when PostgreSQL is not reachable
#   --full-store-url URL  [store] url of the full path instead, used as given (no database is created or
#                         dropped; the tenant gets a unique name), e.g.
#                         postgres://postgres@127.0.0.1:5432/test; PostgreSQL's processes are pinned to core 1
#                         when the URL's host is this machine
#   --full-redis URL      share the full path's budgets through the Redis at URL ([redis] url, a prefix of
#                         its own): the same series with every rate budget leased from Redis and every
#                         request's tenant spend held there (docs/deploy.md); run once without and once with
#                         it to compare
#   --only LIST           comma-separated targets to run among direct,nginx,bare,full,prompt,litellm,portkey
#                         (direct always runs: it is the baseline)
#   --with-peers          install the peers if missing: LiteLLM (`pip install 'litellm[proxy]==VERSION'` into
#                         a venv under target/bench-peers/venv; about 5 minutes and 760 MB) and Portkey's
#                         gateway (`npm install @portkey-ai/gateway@VERSION` under target/bench-peers, with
#                         @hono/node-server overridden to 2.x, see install_peers; about 30 s and 25 MB); the
#                         versions are the ones this script was checked with (LITELLM_SPEC and PORTKEY_SPEC in
#                         the environment override them)
#   --no-build            use the existing target/release/sluice
#   --sluice PATH         measure this sluice binary instead (implies --no-build), e.g. a copy that other
#                         builds in the same target/ cannot replace during the run
#   --no-install          never call apt-get; fail if wrk or nginx is missing
#   --no-wait             do not wait for a quiet machine before measuring
#   --max-wait SECS       longest wait for the 1-minute load average to drop below 1.0 (default 900,
#                         polled every 30 s); after it the run measures anyway and records the load
#   --no-docs             do not write docs/benchmarks.md (the table still goes to stdout)
#   --keep-tmp            keep the temporary folder (configs, logs, raw outputs) and print its path
#   -h, --help            this text
#
# Everything listens on 127.0.0.1 only; every run is bounded in time and stops by itself.

set -euo pipefail

# === options ===

DURATION=10
TTFB_REQUESTS=200
PACED_CONNS=11
PACED_DELAY_MS=10
MAX_CONNS=64
LOG_LEVEL=info
FULL_STORE_URL=""
FULL_STORE=""
FULL_REDIS=""
ONLY="direct,nginx,bare,full,prompt,litellm,portkey"
WITH_PEERS=0
BUILD=1
INSTALL=1
WAIT=1
MAX_WAIT=900
WRITE_DOCS=1
KEEP_TMP=0
SLUICE_BIN=""

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --duration) DURATION=$2; shift ;;
        --quick) DURATION=3; TTFB_REQUESTS=50; WAIT=0; WRITE_DOCS=0 ;;
        --ttfb-requests) TTFB_REQUESTS=$2; shift ;;
        --paced-conns) PACED_CONNS=$2; shift ;;
        --paced-delay-ms) PACED_DELAY_MS=$2; shift ;;
        --max-conns) MAX_CONNS=$2; shift ;;
        --log-level) LOG_LEVEL=$2; shift ;;
        --full-store-url) FULL_STORE_URL=$2; shift ;;
        --full-redis) FULL_REDIS=$2; shift ;;
        --full-store)
            [[ $2 == sqlite || $2 == postgres ]] || { echo "bench/run.sh: --full-store takes sqlite or postgres" >&2; exit 2; }
            FULL_STORE=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --with-peers) WITH_PEERS=1 ;;
        --no-build) BUILD=0 ;;
        --sluice) SLUICE_BIN=$2; BUILD=0; shift ;;
        --no-install) INSTALL=0 ;;
        --no-wait) WAIT=0 ;;
        --max-wait) MAX_WAIT=$2; shift ;;
        --no-docs) WRITE_DOCS=0 ;;
        --keep-tmp) KEEP_TMP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
DOCS="$ROOT/docs/benchmarks.md"
PEERS_DIR="$ROOT/target/bench-peers"
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

# === processes: every one started is recorded and stopped on exit ===

STARTED=()

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local status=$?
    for pid in "${STARTED[@]}"; do
        # Each was started in its own session (setsid): stop its whole process group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    # The gateway is stopped: its database can go (FORCE ends any session left), then PostgreSQL gets
    # every core back.
    if [[ -n ${PG_CREATED:-} ]]; then
        if pg_admin -c "DROP DATABASE IF EXISTS $PG_CREATED WITH (FORCE)" >/dev/null 2>&1; then
            log "dropped the database $PG_CREATED"
        else
            log "could not drop the database $PG_CREATED: drop it by hand (psql -h $PG_HOST -U $PG_USER -d postgres -c 'DROP DATABASE $PG_CREATED WITH (FORCE)')"
        fi
    fi
    unpin_postgres
    if ((KEEP_TMP)); then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# === PostgreSQL, for the full path's usage ledger ===

PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres
# The database this run created (dropped at exit), and whether PostgreSQL's processes were pinned to core 1.
PG_CREATED="" PG_PINNED=0
# The full path's database, when it is on this machine's PostgreSQL: its CPU is measured.
PG_DB=""

# psql as the superuser on the maintenance database; never prompts for a password.
pg_admin() { PGCONNECT_TIMEOUT=5 psql -X -w -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres "$@"; }

pg_reachable() { command -v psql >/dev/null && pg_admin -Atc 'SELECT 1' >/dev/null 2>&1; }

# Pins every PostgreSQL process to core 1 (-a: all its threads); backends forked later inherit it from
# the postmaster.
pin_postgres() {
    local pid n=0
    for pid in $(pgrep -x postgres || true); do
        taskset -a -cp 1 "$pid" >/dev/null 2>&1 && n=$((n + 1))
    done
    PG_PINNED=1
    CMDS+=("for p in \$(pgrep -x postgres); do taskset -a -cp 1 \$p; done")
    log "pinned $n PostgreSQL process(es) to core 1"
}

# Every PostgreSQL process back on every core (those forked while pinned included).
unpin_postgres() {
    ((${PG_PINNED:-0})) || return 0
    local pid
    for pid in $(pgrep -x postgres || true); do
        taskset -a -cp "0-$(($(nproc) - 1))" "$pid" >/dev/null 2>&1 || true
    done
    PG_PINNED=0
    log "PostgreSQL's processes are back on cores 0-$(($(nproc) - 1))"
}

# utime+stime, in clock ticks, of PostgreSQL's live processes, as two numbers: the benchmark's share (the
# backends of $PG_DB and the server's own processes: postmaster, WAL writer, checkpointer, background
# writer, autovacuum) and the rest (other databases' backends: other work).
pg_ticks() {
    local pid stat cmd ours=0 rest=0 t
    # A client backend's title: "postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE" (or [local]).
    local backend='^postgres: ([^ ]+: )?[^ ]+ ([^ ]+) ([^ ]+\([0-9]+\)|\[local\])'
    for pid in $(pgrep -x postgres || true); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        t=$((${12} + ${13}))
        if [[ $cmd =~ $backend && ${BASH_REMATCH[2]} != "$PG_DB" ]]; then
            rest=$((rest + t))
        else
            ours=$((ours + t))
        fi
    done
    echo "$ours $rest"
}

# start NAME CORE CMD...: runs CMD pinned to CORE in its own session, output in $TMP/NAME.log; sets PID.
start() {
    local name=$1 core=$2
    shift 2
    setsid taskset -c "$core" "$@" >"$TMP/$name.log" 2>&1 </dev/null &
    PID=$!
    STARTED+=("$PID")
    CMDS+=("taskset -c $core $*")
}

stop() {
    local pid=$1
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

NEXT_PORT=18400
free_port() {
    while port_in_use "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

# wait_http URL SECONDS PID NAME: until URL answers anything, the process dies, or the time runs out.
wait_http() {
    local url=$1 seconds=$2 pid=$3 name=$4
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$TMP/$name.log" >&2 || true
            die "$name exited during start-up (log above)"
        fi
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true) != 000 ]] && return 0
        sleep 0.2
    done
    tail -n 20 "$TMP/$name.log" >&2 || true
    die "$name did not answer on $url within ${seconds}s"
}

# wait_peer URL SECONDS PID NAME: as wait_http, but a peer that fails to start is skipped, not fatal.
wait_peer() {
    local url=$1 seconds=$2 pid=$3 name=$4
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$TMP/$name.log" >&2 || true
            log "$name exited during start-up (log above)"
            return 1
        fi
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true) != 000 ]] && return 0
        sleep 0.5
    done
    tail -n 20 "$TMP/$name.log" >&2 || true
    log "$name did not answer on $url within ${seconds}s"
    return 1
}

# The PID and its descendants (LiteLLM and Portkey may fork).
proc_tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do proc_tree "$child"; done
}

# utime+stime, in clock ticks, of a process tree, with cutime+cstime: the time of the children that
# exited and were waited for (a worker that a peer replaced during the run still counts).
cpu_ticks() {
    local total=0 pid stat
    for pid in $(proc_tree "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        total=$((total + ${12} + ${13} + ${14} + ${15}))
    done
    echo "$total"
}

# Peak resident memory (VmHWM), in kB, of a process tree: each live process's peak, summed (pages that
# forked processes share count once per process, so for a tree it is an upper bound).
peak_rss_kb() {
    local total=0 pid kb
    for pid in $(proc_tree "$1"); do
        kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# Busy clock ticks (user, nice, system, irq, softirq, steal) of core 0 and core 1, from /proc/stat.
core_busy() {
    awk '$1 == "cpu0" {c0 = $2 + $3 + $4 + $7 + $8 + $9} $1 == "cpu1" {c1 = $2 + $3 + $4 + $7 + $8 + $9}
        END {print c0 + 0, c1 + 0}' /proc/stat
}

# === the machine ===

wait_for_quiet() {
    local waited=0 load
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if awk -v l="$load" 'BEGIN {exit !(l < 1.0)}'; then
            log "1-minute load average $load: measuring"
            return 0
        fi
        if ((waited >= MAX_WAIT)); then
            log "load average still $load after ${waited}s: measuring anyway (recorded in the results)"
            LOAD_NOTE="The machine was busy: the 1-minute load average was still $load after waiting ${waited} s for it to drop below 1.0, so other work shared the cores and the figures are noisier and slower than on a quiet machine."
            return 0
        fi
        log "1-minute load average $load (other work on the machine): waiting for it to drop below 1.0 (${waited}s of ${MAX_WAIT}s)"
        sleep 30
        waited=$((waited + 30))
    done
}

install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0
    ((INSTALL)) || die "missing ${missing[*]} and --no-install given"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    log "installing ${missing[*]} with apt-get"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The peers' versions this script was checked with (override with LITELLM_SPEC / PORTKEY_SPEC).
LITELLM_SPEC=${LITELLM_SPEC:-'litellm[proxy]==1.108.7'}
PORTKEY_SPEC=${PORTKEY_SPEC:-'@portkey-ai/gateway@1.15.2'}
# The gateway asks for @hono/node-server ^1.3.3, which resolves to a 1.x whose Response keeps the immutable
# headers of the upstream's fetch() answer; the gateway then appends its x-portkey-* headers to them and
# every stream fails with a 500 ("TypeError: immutable", Portkey-AI/gateway issue 1389). 2.x copies the
# headers (honojs/node-server pull request 382), so the install pins it with an npm override.
PORTKEY_HONO=2.1.9

install_peers() {
    mkdir -p "$PEERS_DIR"
    local t0
    if ! litellm_cmd >/dev/null; then
        command -v python3 >/dev/null || die "python3 is missing: install it or drop --with-peers"
        log "installing $LITELLM_SPEC into $PEERS_DIR/venv (pip; about 5 minutes, 760 MB)"
        t0=$SECONDS
        python3 -m venv "$PEERS_DIR/venv"
        "$PEERS_DIR/venv/bin/pip" install -q "$LITELLM_SPEC" >&2
        log "LiteLLM installed in $((SECONDS - t0)) s"
    fi
    if [[ ! -f $PEERS_DIR/node_modules/@portkey-ai/gateway/build/start-server.js ]] || ! portkey_hono_ok; then
        command -v npm >/dev/null || die "npm is missing: install Node.js (apt-get install nodejs npm) or drop --with-peers"
        log "installing $PORTKEY_SPEC under $PEERS_DIR (npm; about 30 s, 25 MB)"
        t0=$SECONDS
        printf '{\n  "private": true,\n  "description": "Peers of the end-to-end benchmark (bench/run.sh --with-peers)",\n  "overrides": { "@hono/node-server": "%s" }\n}\n' \
            "$PORTKEY_HONO" >"$PEERS_DIR/package.json"
        (cd "$PEERS_DIR" && npm install --no-audit --no-fund --loglevel=error "$PORTKEY_SPEC" >&2)
        portkey_hono_ok || die "Portkey's gateway resolves @hono/node-server $(portkey_hono_version || echo '?'), not 2.x: its streams would fail"
        log "Portkey's gateway installed in $((SECONDS - t0)) s"
    fi
}

# The LiteLLM proxy command, if installed (the bench venv first, then the user's Python).
litellm_cmd() {
    if [[ -x "$PEERS_DIR/venv/bin/litellm" ]]; then
        echo "$PEERS_DIR/venv/bin/litellm"
    elif command -v python3 >/dev/null && python3 -c 'import litellm' 2>/dev/null && command -v litellm >/dev/null; then
        command -v litellm
    else
        return 1
    fi
}

# Portkey's start-server.js, if installed (under target/bench-peers, or globally for npx).
portkey_entry() {
    local dir
    command -v node >/dev/null || return 1
    for dir in "$PEERS_DIR/node_modules/@portkey-ai/gateway" "$(npm root -g 2>/dev/null || echo /nonexistent)/@portkey-ai/gateway"; do
        if [[ -f "$dir/build/start-server.js" ]]; then
            echo "$dir/build/start-server.js"
            return 0
        fi
    done
    return 1
}

# The version of @hono/node-server that the installed gateway loads (Node's own lookup from its folder).
portkey_hono_version() {
    local entry
    entry=$(portkey_entry) || return 1
    (cd "$(dirname "$entry")" && node -e '
        const fs = require("fs"), path = require("path");
        let dir = path.dirname(require.resolve("@hono/node-server"));
        while (!fs.existsSync(path.join(dir, "package.json"))) dir = path.dirname(dir);
        console.log(JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version)' 2>/dev/null)
}

# Whether the gateway can stream with it (see PORTKEY_HONO): 2.x or later.
portkey_hono_ok() {
    local version
    version=$(portkey_hono_version) || return 1
    [[ ${version%%.*} =~ ^[0-9]+$ ]] && ((${version%%.*} >= 2))
}

# === load ===

CMDS=()

# The current target's extra headers ("Name: value|Name: value") as curl/oha arguments, in EXTRA_H.
extra_headers() {
    local header list
    EXTRA_H=()
    IFS='|' read -r -a list <<<"$T_HEADERS"
    for header in "${list[@]}"; do
        if [[ -n $header ]]; then EXTRA_H+=(-H "$header"); fi
    done
}

WRK_LUA="$TMP/post.lua"

write_lua() {
    cat >"$WRK_LUA" <<'EOF'
-- A POST of the body in $BENCH_BODY with $BENCH_AUTH and the "Name: value|Name: value" of
-- $BENCH_HEADERS; with $BENCH_DELAY_MS > 0 each connection pauses that long after every answer.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = file:read("*a")
file:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_AUTH")
for header in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
    local name, value = string.match(header, "^%s*([^:]+):%s*(.-)%s*$")
    if name then wrk.headers[name] = value end
end
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
    function delay() return pause end
end
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH requests=%d duration_us=%d errors=%d p50=%d p90=%d p99=%d non2xx=%d\n",
        summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), e.status))
end
EOF
}

# ~500 tokens of English-like prose (about four bytes a token), the same on every run.
prose() {
    awk 'BEGIN {
        n = split("the river carries water from mountains to sea and every town along its banks depends on seasonal floods that bring fertile silt farmers measure rainfall carefully because harvests follow it", w, " ");
        s = 7; out = "";
        while (length(out) < 2000) {
            s = (s * 75 + 74) % 65537;
            out = out w[s % n + 1] ((s % 11 == 0) ? ". " : " ");
        }
        printf "%s", out
    }'
}

write_bodies() {
    local text model
    text=$(prose)
    for model in bench-model bench; do
        printf '{"model":"%s","messages":[{"role":"system","content":"You are a concise assistant. Answer in plain English."},{"role":"user","content":"%s"}],"max_tokens":64}' \
            "$model" "$text" >"$TMP/chat-$model.json"
        printf '{"model":"%s","messages":[{"role":"system","content":"You are a concise assistant. Answer in plain English."},{"role":"user","content":"%s"}],"max_tokens":64,"stream":true}' \
            "$model" "$text" >"$TMP/chat-stream-$model.json"
    done
    printf '{"variables":{"text":"%s"}}' "$text" >"$TMP/prompt.json"
    printf '{"variables":{"text":"%s"},"stream":true}' "$text" >"$TMP/prompt-stream.json"
}

# Current target: its URL, body files, key, extra headers and the PID whose CPU and memory are measured.
T_NAME="" T_URL="" T_BODY="" T_BODY_STREAM="" T_AUTH="" T_HEADERS="" T_PID=""
# Non-empty while the target's usage ledger is in this machine's PostgreSQL: its CPU is measured too.
T_PG=""

# wait_idle: until the target is idle (under 5% of a core over half a second; at most 60 s), with the
# milliseconds it was still busy in IDLE_MS. wrk stops by closing its connections, and a slow target
# (LiteLLM) goes on with what it had accepted: seconds of backlog that would otherwise fall into the next run.
wait_idle() {
    local start now before after
    start=$(date +%s%N)
    while :; do
        before=$(cpu_ticks "$T_PID")
        sleep 0.5
        after=$(cpu_ticks "$T_PID")
        now=$(date +%s%N)
        IDLE_MS=$(((now - start) / 1000000 - 500))
        if (((after - before) * 40 <= CLK_TCK)); then break; fi
        if ((IDLE_MS >= 60000)); then log "  $T_NAME still busy after 60 s: going on anyway"; break; fi
    done
    ((IDLE_MS >= 0)) || IDLE_MS=0
}

# run_wrk MODE(nonstream|stream) LOAD(paced|max): one measured run; appends a result line.
run_wrk() {
    local mode=$1 load=$2 body conns delay out ticks0 ticks1 sim0 sim1 t0 t1 busy0 busy1 status=0 pg0="0 0" pg1="0 0"
    body=$T_BODY
    if [[ $mode == stream ]]; then body=$T_BODY_STREAM; fi
    if [[ $load == paced ]]; then conns=$PACED_CONNS delay=$PACED_DELAY_MS; else conns=$MAX_CONNS delay=0; fi
    out="$TMP/wrk-$T_NAME-$mode-$load.txt"
    wait_idle
    if ((IDLE_MS >= 1000)); then log "  $T_NAME was busy for $((IDLE_MS / 1000)) s more with the requests of the previous run"; fi
    busy0=$(core_busy)
    ticks0=$(cpu_ticks "$T_PID")
    sim0=$(cpu_ticks "$SIM_PID")
    if [[ -n $T_PG ]]; then pg0=$(pg_ticks); fi
    t0=$(date +%s%N)
    # `time` gives wrk's own CPU time, so the other work on core 1 can be told apart from the load's.
    local TIMEFORMAT='%U %S'
    { time BENCH_BODY=$body BENCH_AUTH=$T_AUTH BENCH_HEADERS=$T_HEADERS BENCH_DELAY_MS=$delay \
        taskset -c 1 wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 10s -s "$WRK_LUA" "$T_URL" >"$out" 2>&1; } \
        2>"$out.time" || status=$?
    ((status == 0)) || { cat "$out" >&2; die "wrk failed against $T_NAME"; }
    t1=$(date +%s%N)
    ticks1=$(cpu_ticks "$T_PID")
    sim1=$(cpu_ticks "$SIM_PID")
    if [[ -n $T_PG ]]; then pg1=$(pg_ticks); fi
    busy1=$(core_busy)
    # Requests still in flight when wrk stopped: their CPU is in this run but they are not counted.
    local drain_ms
    wait_idle
    drain_ms=$IDLE_MS
    if ((drain_ms >= 1000)); then log "  $T_NAME was still busy $((drain_ms / 1000)) s after the run (requests in flight at its end)"; fi
    CMDS+=("BENCH_BODY=$(basename "$body") BENCH_AUTH=$T_AUTH BENCH_HEADERS='$T_HEADERS' BENCH_DELAY_MS=$delay taskset -c 1 wrk -t1 -c$conns -d${DURATION}s --timeout 10s -s post.lua $T_URL")
    local line
    line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; die "no result from wrk against $T_NAME"; }
    count_answered "$out" "$conns"
    # PostgreSQL's CPU for the benchmark's database (and the server's own processes), on core 1.
    local pg=0
    if [[ -n $T_PG ]]; then
        pg=$((${pg1%% *} - ${pg0%% *}))
        echo "$T_NAME $mode $load $pg $(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line") $((t1 - t0))" >>"$TMP/pgcpu.txt"
    fi
    # Other work on each core, in % of the run: core 0's busy time less the target's (when the target is
    # on core 0), core 1's less the simulator's, wrk's and (for the full path) PostgreSQL's for its ledger.
    local other0 other1 on_core0=1
    if [[ $T_PID == "$SIM_PID" ]]; then on_core0=0; fi
    read -r other0 other1 < <(awk -v tck="$CLK_TCK" -v wall=$((t1 - t0)) -v b0="$busy0" -v b1="$busy1" \
        -v target=$((ticks1 - ticks0)) -v sim=$((sim1 - sim0)) -v on0="$on_core0" -v pg="$pg" '
        { wrk = ($1 + $2) * tck }
        END {
            split(b0, a, " "); split(b1, b, " "); span = wall / 1e9 * tck
            o0 = (b[1] - a[1] - (on0 ? target : 0)) / span * 100
            o1 = (b[2] - a[2] - sim - wrk - pg) / span * 100
            # Clamped: the two readings of /proc/stat bracket the run by a few ticks.
            printf "%.0f %.0f\n", (o0 < 0 ? 0 : (o0 > 100 ? 100 : o0)), (o1 < 0 ? 0 : (o1 > 100 ? 100 : o1))
        }' "$out.time")
    # name mode load requests duration_us errors p50 p90 p99 cpu_ticks wall_ns other0% other1% drain_ms conns
    awk -v name="$T_NAME" -v mode="$mode" -v kind="$load" -v ticks=$((ticks1 - ticks0)) -v wall=$((t1 - t0)) \
        -v o0="$other0" -v o1="$other1" -v drain="$drain_ms" -v conns="$conns" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { print name, mode, kind, v["requests"], v["duration_us"], v["errors"], v["p50"], v["p90"], v["p99"], ticks, wall, o0, o1, drain, conns }
    ' <<<"$line" >>"$TMP/results.txt"
    log "  $T_NAME $mode $load: $(awk '{printf "%.0f req/s, p50 %.2f ms, p99 %.2f ms, errors %d, other work on cores 0/1 %d%%/%d%%", $4 / ($5 / 1e6), $7 / 1000, $9 / 1000, $6, $12, $13}' <<<"$(tail -n1 "$TMP/results.txt")")"
}

# p99 at a fixed 1,000 requests/s with oha, when oha is installed.
run_oha() {
    command -v oha >/dev/null || return 0
    local out="$TMP/oha-$T_NAME.txt"
    wait_idle
    extra_headers
    taskset -c 1 oha --no-tui -z "${DURATION}s" -q 1000 -c "$PACED_CONNS" -m POST \
        -H "Authorization: Bearer $T_AUTH" -H 'Content-Type: application/json' "${EXTRA_H[@]}" \
        -D "$T_BODY" "$T_URL" >"$out" 2>&1 || { log "  oha failed against $T_NAME"; return 0; }
    CMDS+=("taskset -c 1 oha --no-tui -z ${DURATION}s -q 1000 -c $PACED_CONNS -m POST -H 'Authorization: Bearer $T_AUTH' -D $(basename "$T_BODY") $T_URL")
    local p99
    p99=$(awk '/99.00%/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) {print $i * 1000; exit}}' "$out")
    echo "$T_NAME ${p99:-nan}" >>"$TMP/oha.txt"
    log "  $T_NAME oha -q 1000: p99 ${p99:-?} ms"
}

# Time to first byte of streams: TTFB_REQUESTS sequential requests in one curl (one keep-alive connection).
run_ttfb() {
    local cfg="$TMP/ttfb-$T_NAME.curl" out="$TMP/ttfb-$T_NAME.txt"
    : >"$cfg"
    for _ in $(seq "$TTFB_REQUESTS"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$T_URL" >>"$cfg"; done
    extra_headers
    taskset -c 1 curl -s -K "$cfg" -X POST -H "Authorization: Bearer $T_AUTH" -H 'Content-Type: application/json' \
        "${EXTRA_H[@]}" --data-binary "@$T_BODY_STREAM" -w '%{http_code} %{time_starttransfer}\n' >"$out" ||
        die "curl failed measuring the time to first byte of $T_NAME"
    CMDS+=("taskset -c 1 curl -s -K ttfb.curl ($TTFB_REQUESTS × url = $T_URL) -X POST -H 'Authorization: Bearer $T_AUTH' --data-binary @$(basename "$T_BODY_STREAM") -w '%{http_code} %{time_starttransfer}\\n'")
    local bad
    bad=$(awk '$1 != 200' "$out" | wc -l)
    ((bad == 0)) || log "  $T_NAME TTFB: $bad of $TTFB_REQUESTS answers were not 200"
    echo "$T_NAME $(awk '$1 == 200' "$out" | wc -l) 0" >>"$TMP/answered.txt"
    awk '$1 == 200 {print $2 * 1000}' "$out" | sort -n | awk -v name="$T_NAME" -v bad="$bad" '
        { v[++n] = $1 }
        END {
            if (n == 0) { print name, "nan", "nan", bad; exit }
            print name, v[int((n - 1) * 0.50) + 1], v[int((n - 1) * 0.99) + 1], bad
        }' >>"$TMP/ttfb.txt"
    log "  $T_NAME TTFB: $(tail -n1 "$TMP/ttfb.txt" | awk '{printf "p50 %.3f ms, p99 %.3f ms", $2, $3}')"
}

# One request of each kind must succeed before any load: a misconfigured target fails loudly. The first
# request may be slow (LiteLLM imports lazily), hence the generous time limit.
check_target() {
    local reply events
    extra_headers
    reply=$(curl -s --max-time 60 -H "Authorization: Bearer $T_AUTH" -H 'Content-Type: application/json' \
        "${EXTRA_H[@]}" --data-binary "@$T_BODY" -w '\n%{http_code}' "$T_URL" 2>&1 || true)
    [[ ${reply##*$'\n'} == 200 && $reply == *'"choices"'* ]] || { echo "$reply" | tail -c 600 >&2; return 1; }
    reply=$(curl -s --max-time 60 -H "Authorization: Bearer $T_AUTH" -H 'Content-Type: application/json' \
        "${EXTRA_H[@]}" --data-binary "@$T_BODY_STREAM" -w '\n%{http_code}' "$T_URL" 2>&1 || true)
    [[ ${reply##*$'\n'} == 200 && $reply == *'[DONE]'* ]] || { echo "$reply" | tail -c 600 >&2; return 1; }
    events=$(grep -c '^data: ' <<<"$reply" || true)
    echo "$T_NAME 2 0" >>"$TMP/answered.txt"
    log "  $T_NAME answers: a completion, and a stream of $events events ending in [DONE]"
}

# count_answered WRK_OUTPUT CONNS: adds the run's answers with a 2xx status to the target's tally in
# $TMP/answered.txt (name answers connections), which the full path's ledger check compares with the rows.
count_answered() {
    sed -n 's/^BENCH .*requests=\([0-9]*\).* non2xx=\([0-9]*\).*/\1 \2/p' "$1" |
        awk -v name="$T_NAME" -v conns="$2" '{print name, $1 - $2, conns}' >>"$TMP/answered.txt"
}

# measure: the whole series against the current target.
measure() {
    log "measuring $T_NAME"
    # Warm-up: connection pools, allocator, caches; not recorded (its answers are counted for the ledger check).
    BENCH_BODY=$T_BODY BENCH_AUTH=$T_AUTH BENCH_HEADERS=$T_HEADERS BENCH_DELAY_MS=0 \
        taskset -c 1 wrk -t1 -c"$MAX_CONNS" -d2s --timeout 10s -s "$WRK_LUA" "$T_URL" >"$TMP/wrk-$T_NAME-warmup.txt" 2>&1 || true
    count_answered "$TMP/wrk-$T_NAME-warmup.txt" "$MAX_CONNS"
    run_wrk nonstream paced
    run_wrk nonstream max
    run_wrk stream paced
    run_wrk stream max
    run_oha
    wait_idle
    run_ttfb
    echo "$T_NAME $(peak_rss_kb "$T_PID")" >>"$TMP/rss.txt"
}

# === targets ===

SLUICE=${SLUICE_BIN:-$ROOT/target/release/sluice}
[[ $SLUICE == /* ]] || SLUICE="$ROOT/$SLUICE"

start_simulator() {
    free_port
    SIM_PORT=$PORT
    start simulator 1 "$SLUICE" simulate --listen "127.0.0.1:$SIM_PORT" --reply-tokens 20
    SIM_PID=$PID
    wait_http "http://127.0.0.1:$SIM_PORT/healthz" 20 "$SIM_PID" simulator
}

target_direct() {
    T_NAME=direct T_URL="http://127.0.0.1:$SIM_PORT/v1/chat/completions" T_AUTH=sk-upstream T_HEADERS=""
    T_BODY="$TMP/chat-bench-model.json" T_BODY_STREAM="$TMP/chat-stream-bench-model.json" T_PID=$SIM_PID
    check_target || die "the simulator does not answer as expected"
    measure
}

target_nginx() {
    local dir="$TMP/nginx" bin
    bin=$(command -v nginx || echo /usr/sbin/nginx)
    mkdir -p "$dir"
    free_port
    cat >"$dir/nginx.conf" <<EOF
# A plain reverse proxy in front of the simulator: the floor any proxy can be compared to.
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    client_max_body_size 8m;
    upstream simulator {
        server 127.0.0.1:$SIM_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    start nginx 0 "$bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    T_PID=$PID
    wait_http "http://127.0.0.1:$PORT/healthz" 20 "$T_PID" nginx
    T_NAME=nginx T_URL="http://127.0.0.1:$PORT/v1/chat/completions" T_AUTH=sk-upstream T_HEADERS=""
    T_BODY="$TMP/chat-bench-model.json" T_BODY_STREAM="$TMP/chat-stream-bench-model.json"
    check_target || { tail -n 30 "$dir/error.log" >&2; die "nginx does not proxy as expected"; }
    measure
    stop "$T_PID"
}

# === the full path's store: where its usage ledger goes ===

# Set by setup_full_store: the full path's [store] url, its kind (postgres|sqlite), the tenant's name, how
# the docs describe the store; after the tenant and key are made: the key, its id, and the ledger's last
# row id before the gateway started.
FULL_URL="" FULL_KIND="" TENANT=bench STORE_DESC="" VKEY="" VKEY_ID="" LEDGER_ID0=0 PG_VERSION=""

# A URL with its password, if any, hidden.
redact_url() { sed -E 's#(//[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

setup_full_store() {
    if [[ -n $FULL_STORE_URL ]]; then
        FULL_URL=$FULL_STORE_URL
        case $FULL_URL in
            postgres:* | postgresql:*) FULL_KIND=postgres ;;
            sqlite:*) FULL_KIND=sqlite ;;
            *) die "--full-store-url takes a postgres:// or sqlite:// URL, not $(redact_url "$FULL_URL")" ;;
        esac
        # An existing database may hold a tenant `bench` already: this run's has a name of its own.
        TENANT="bench-$$-$(date +%s)"
        STORE_DESC="the store at \`$(redact_url "$FULL_URL")\` (\`--full-store-url\`)"
        if [[ $FULL_KIND == postgres ]]; then
            local rest host db
            rest=${FULL_URL#*://}
            rest=${rest#*@}
            host=${rest%%/*}
            host=${host%:*}
            db=${rest#*/}
            db=${db%%\?*}
            if [[ $host == 127.0.0.1 || $host == localhost ]] && pgrep -x postgres >/dev/null; then
                PG_DB=$db
            else
                STORE_NOTES+=("The full path's usage ledger went to PostgreSQL on $host (\`--full-store-url\`): not this machine's, so its processes were not pinned and their CPU is not counted here.")
            fi
        fi
        return 0
    fi
    if [[ $FULL_STORE != sqlite ]]; then
        if pg_reachable; then
            pg_admin -c "CREATE DATABASE sluice_bench_$$" >/dev/null || die "could not create the database sluice_bench_$$"
            PG_CREATED="sluice_bench_$$"
            CMDS+=("psql -h $PG_HOST -U $PG_USER -d postgres -c 'CREATE DATABASE $PG_CREATED'   # dropped at exit: DROP DATABASE $PG_CREATED WITH (FORCE)")
            log "created the database $PG_CREATED for the full path's usage ledger"
            FULL_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_CREATED" FULL_KIND=postgres PG_DB=$PG_CREATED
            PG_VERSION=$(pg_admin -Atc 'SHOW server_version' 2>/dev/null | cut -d' ' -f1 || true)
            STORE_DESC="PostgreSQL ${PG_VERSION:-?} on this machine ($PG_HOST:$PG_PORT, the server's own settings), in a database created for the run and dropped after it"
            return 0
        fi
        [[ $FULL_STORE == postgres ]] && die "PostgreSQL is not reachable at $PG_HOST:$PG_PORT as $PG_USER (--full-store postgres)"
        local why="PostgreSQL was not reachable at $PG_HOST:$PG_PORT as user $PG_USER"
        command -v psql >/dev/null || why="psql is not installed"
        log "$why: the full path's usage ledger goes to a SQLite file instead"
        STORE_NOTES+=("$why, so the full path's usage ledger went to a SQLite file in the gateway's folder instead of PostgreSQL: this is not issue 7's full path (ledger in Postgres), and the full-path figures are for SQLite.")
        STORE_DESC="a SQLite file in the gateway's folder (PostgreSQL was not reachable: see the notes)"
    else
        STORE_DESC="a SQLite file in the gateway's folder (\`--full-store sqlite\`)"
    fi
    FULL_URL="sqlite://data/sluice.db" FULL_KIND=sqlite
}

# The sluice command line against the gateway's configuration, in its folder (for the store's relative paths).
sluice_cli() {
    local dir=$1
    shift
    env -u SLUICE_LISTEN -u SLUICE_DATABASE_URL -u SLUICE_CONFIG -u RUST_LOG -C "$dir" "$SLUICE" --config "$dir/sluice.toml" "$@"
}

# ledger_sql DIR SQL: runs SQL on the full path's store, fields separated by spaces.
ledger_sql() {
    local dir=$1 sql=$2 file
    if [[ $FULL_KIND == postgres ]]; then
        command -v psql >/dev/null || return 1
        PGCONNECT_TIMEOUT=5 psql -X -w -At -F ' ' -v ON_ERROR_STOP=1 "$FULL_URL" -c "$sql"
    else
        command -v sqlite3 >/dev/null || return 1
        file=${FULL_URL#sqlite:}
        file=${file#//}
        file=${file%%\?*}
        [[ $file == /* ]] || file="$dir/$file"
        sqlite3 -separator ' ' "$file" "$sql"
    fi
}

# The tenant and its virtual key, made with the CLI against the gateway's configuration before it starts.
make_tenant_and_key() {
    local dir=$1 out="$TMP/keys-create.txt"
    sluice_cli "$dir" tenants create "$TENANT" --rpm 1000000000 --tpm 1000000000000 --budget-usd 1000000 \
        >"$TMP/tenants-create.txt" 2>&1 || { cat "$TMP/tenants-create.txt" >&2; die "sluice tenants create failed"; }
    sluice_cli "$dir" keys create "$TENANT" --name bench >"$out" 2>&1 || { cat "$out" >&2; die "sluice keys create failed"; }
    VKEY=$(sed -n 's/^key: *//p' "$out" | head -n1)
    VKEY_ID=$(sed -n 's/^id: *//p' "$out" | head -n1)
    [[ $VKEY == sk-* && -n $VKEY_ID ]] || { cat "$out" >&2; die "no key in the output of sluice keys create"; }
    CMDS+=("env -C \$TMP/sluice-full $SLUICE --config \$TMP/sluice-full/sluice.toml tenants create $TENANT --rpm 1000000000 --tpm 1000000000000 --budget-usd 1000000")
    CMDS+=("env -C \$TMP/sluice-full $SLUICE --config \$TMP/sluice-full/sluice.toml keys create $TENANT --name bench   # prints key: \$BENCH_KEY")
    LEDGER_ID0=$(ledger_sql "$dir" 'SELECT coalesce(max(id), 0) FROM usage_ledger' 2>/dev/null || echo 0)
    log "tenant $TENANT and its virtual key ${VKEY:0:14}… (id $VKEY_ID) created in the $FULL_KIND store"
}

# The sum of a metric's samples in a /metrics answer.
metric() { awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%.0f\n", s}' "$2"; }

# After the full path's series: the ledger must hold one row per request the gateway handled, with the
# tenant and the key, and nothing spooled or failed.
ledger_check() {
    local port=$1 dir=$2 prev="" now file="$TMP/metrics-full.txt" _
    # The writer sends a batch every 200 ms or 500 rows: until its queue is empty and the counts settle.
    for _ in $(seq 60); do
        curl -s --max-time 5 -o "$file" "http://127.0.0.1:$port/metrics" || true
        now="$(metric sluice_ledger_queue_depth "$file") $(metric sluice_ledger_rows_written_total "$file") $(metric sluice_ledger_rows_spooled_total "$file")"
        [[ ${now%% *} == 0 && $now == "$prev" ]] && break
        prev=$now
        sleep 0.5
    done
    local depth written spooled pending errors up attempts failovers
    depth=$(metric sluice_ledger_queue_depth "$file")
    written=$(metric sluice_ledger_rows_written_total "$file")
    spooled=$(metric sluice_ledger_rows_spooled_total "$file")
    pending=$(metric sluice_ledger_spool_pending "$file")
    errors=$(metric sluice_ledger_write_errors_total "$file")
    up=$(metric sluice_ledger_database_up "$file")
    attempts=$(metric sluice_upstream_attempts_total "$file")
    failovers=$(metric sluice_failovers_total "$file")
    local answered conns
    read -r answered conns < <(awk '$1 ~ /^sluice-full/ {a += $2; c += $3} END {print a + 0, c + 0}' "$TMP/answered.txt")
    local where="PostgreSQL ${PG_VERSION:-}, database ${PG_DB:-?}"
    [[ $FULL_KIND == sqlite ]] && where="SQLite, $(sed 's/^sqlite:\/\///' <<<"$FULL_URL") in the gateway's folder"
    [[ -n $FULL_STORE_URL ]] && where="$(redact_url "$FULL_URL")"
    local note="Usage ledger of the full path ($where; every request of the gateway's life: warm-ups, checks, runs and TTFB series$(wants prompt && echo ", the prompt template's included")), from its /metrics: $written rows written, $spooled spooled ($pending pending), $errors write errors, queue $depth at the end, database up: $up."
    local ok=1 rows r200 r499 rother keyed costed cost sql
    sql="SELECT count(*), coalesce(sum(CASE WHEN status = 200 THEN 1 ELSE 0 END), 0),
        coalesce(sum(CASE WHEN status = 499 THEN 1 ELSE 0 END), 0),
        coalesce(sum(CASE WHEN status NOT IN (200, 499) THEN 1 ELSE 0 END), 0),
        coalesce(sum(CASE WHEN tenant = '$TENANT' AND key_id = '$VKEY_ID' THEN 1 ELSE 0 END), 0),
        count(cost_micros), coalesce(sum(cost_micros), 0)
        FROM usage_ledger WHERE id > $LEDGER_ID0"
    if read -r rows r200 r499 rother keyed costed cost < <(ledger_sql "$dir" "$sql" 2>"$TMP/ledger-sql.err") && [[ -n $rows ]]; then
        note+=" The table usage_ledger holds $rows new rows: $r200 with status 200, $r499 with 499 (requests in flight when a wrk run stopped and closed its connections), $rother other; $keyed carry the tenant $TENANT and the virtual key's id; $costed have a cost (\$$(awk -v c="$cost" 'BEGIN {printf "%.2f", c / 1e6}') in all, charged to the tenant's budget)."
        note+=" One row per upstream call: $rows rows for $attempts calls (sluice_upstream_attempts_total, $failovers failovers)"
        if ((rows == attempts && failovers == 0 && written + spooled == rows && keyed == rows)); then note+=", as it should."; else note+=": MISMATCH."; ok=0; fi
        note+=" The load generator and curl counted $answered answers with status 200"
        if ((r200 >= answered && r200 - answered <= conns)); then
            note+="; the ledger's $((r200 - answered)) more are answers sent as a wrk run stopped, which it did not count (at most one per connection per run: $conns)."
        else
            note+=", against $r200 rows with status 200: MISMATCH (the difference can only be up to one request per connection per run, $conns)."
            ok=0
        fi
    else
        note+=" The rows could not be counted in the database ($(head -c 200 "$TMP/ledger-sql.err" | tr '\n' ' ')): the gateway's own counts only: $attempts upstream calls ($failovers failovers)."
        if ((written + spooled + depth != attempts)); then note+=" Rows written and spooled do not match them: MISMATCH."; ok=0; fi
    fi
    if ((errors > 0 || spooled > 0)); then ok=0; fi
    ((ok)) || note="⚠ $note"
    STORE_NOTES+=("$note")
    log "  ledger: $written rows written, $spooled spooled, $errors write errors$([[ -n ${rows:-} ]] && echo "; $rows rows in usage_ledger for $attempts upstream calls")$( ((ok)) && echo ": consistent" || echo ": MISMATCH, see the notes")"
}

# PostgreSQL's CPU per request during each full-path run, as a note.
pg_cpu_note() {
    [[ -s $TMP/pgcpu.txt ]] || return 0
    local figures
    figures=$(awk -v tck="$CLK_TCK" '
        { key = $1; per = $5 > 0 ? $4 / tck * 1e6 / $5 : 0; share = $4 / tck / ($6 / 1e9) * 100
          cell = sprintf("%s %s %.0f µs (%.0f%% of core 1)", ($2 == "stream" ? "streaming" : "non-streaming"), $3, per, share)
          if (!(key in list)) order[++n] = key
          list[key] = list[key] (list[key] == "" ? "" : ", ") cell }
        END { for (i = 1; i <= n; i++) printf "%s%s: %s", (i > 1 ? "; " : ""), (order[i] == "sluice-full" ? "full path" : "prompt template"), list[order[i]] }
    ' "$TMP/pgcpu.txt")
    STORE_NOTES+=("PostgreSQL ran on core 1 with the simulator and the load generator: all its processes were pinned there (\`taskset -a -cp 1\`; backends forked later inherit it) for the full path, and put back on every core at the end. Its CPU for the ledger (utime+stime of the live backends of the benchmark's database and of the server's own processes, before and after each run; clock ticks of $((1000 / CLK_TCK)) ms), per request of the run: $figures. It is in neither *CPU/req* (the gateway's process only) nor *other work core 1*; other databases' backends would count as other work.")
}

# write_sluice_config FILE PORT full(0|1)
write_sluice_config() {
    local file=$1 port=$2 full=$3 budgets="" prompts_dir="$TMP/no-prompts"
    if ((full)); then
        # Upstream-key budgets set high (the budget code runs but never refuses), and a price (gpt-4o's list
        # price) so every request is costed and charged to the tenant's budget.
        budgets=$'rpm = 1000000000\ntpm = 1000000000000\nprice = { input = 2.50, output = 10.00, cached_input = 1.25 }'
        prompts_dir="$TMP/prompts"
        mkdir -p "$prompts_dir"
        cat >"$prompts_dir/bench.toml" <<'EOF'
name = "bench"
version = 1
description = "Benchmark prompt: a fixed system message and the caller's text."
model = "bench"

[parameters]
max_tokens = 64

[variables.text]
type = "string"
description = "The user's message."

[[messages]]
role = "system"
content = "You are a concise assistant. Answer in plain English."

[[messages]]
role = "user"
content = "{{ text }}"
EOF
    fi
    # The bare proxy: the store's defaults (a SQLite file) and a static key. The full path: the store
    # chosen by setup_full_store, and only virtual keys (made with the CLI) get in.
    local store="# [store]: the defaults" keys='["sk-bench"]'
    if ((full)); then
        store=$'[store]\nurl = "'"$FULL_URL"'"'
        keys='[]   # virtual keys only: sluice keys create'
        if [[ -n $FULL_REDIS ]]; then
            store+=$(printf '\n\n[redis]\nurl = "%s"\nprefix = "sluice-bench-%s"' "$FULL_REDIS" "$$")
        fi
    fi
    cat >"$file" <<EOF
# Generated by bench/run.sh: $([[ $full == 1 ]] && echo "full path (a tenant and its virtual key, budgets, prices, usage ledger in $FULL_KIND, prompt templates)" || echo "bare proxy").
# The gateway runs in a folder of its own, so relative defaults (the store's files) land there.
[server]
listen = "127.0.0.1:$port"

$store

[auth]
keys = $keys

[log]
format = "json"
level = "$LOG_LEVEL"

[[providers]]
name = "simulator"
kind = "openai_compatible"
base_url = "http://127.0.0.1:$SIM_PORT/v1"
keys = ["sk-upstream"]

[[models]]
name = "bench"
[[models.deployments]]
provider = "simulator"
model = "bench-model"
$budgets

[prompts]
dir = "$prompts_dir"
EOF
}

# target_sluice bare|full [prompt]
target_sluice() {
    local variant=$1 full=0 dir="$TMP/sluice-$1"
    if [[ $variant == full ]]; then full=1; fi
    mkdir -p "$dir/data" "$dir/config"
    if [[ -f $ROOT/config/prices.toml ]]; then ln -s "$ROOT/config/prices.toml" "$dir/config/prices.toml"; fi
    free_port
    T_AUTH=sk-bench T_HEADERS="" T_PG=""
    if ((full)); then
        setup_full_store
        # PostgreSQL off the gateway's core before anything connects to it.
        if [[ -n $PG_DB ]]; then pin_postgres; fi
    fi
    write_sluice_config "$dir/sluice.toml" "$PORT" "$full"
    if ((full)); then
        make_tenant_and_key "$dir"
        T_AUTH=$VKEY
        if [[ -n $PG_DB ]]; then T_PG=1; fi
    fi
    # Variables that would override the generated configuration are left out.
    start "sluice-$variant" 0 env -u SLUICE_LISTEN -u SLUICE_DATABASE_URL -u SLUICE_CONFIG -u RUST_LOG -C "$dir" \
        "$SLUICE" --config "$dir/sluice.toml" serve
    T_PID=$PID
    wait_http "http://127.0.0.1:$PORT/healthz" 30 "$T_PID" "sluice-$variant"
    if wants "$variant"; then
        T_NAME="sluice-$variant" T_URL="http://127.0.0.1:$PORT/v1/chat/completions"
        T_BODY="$TMP/chat-bench.json" T_BODY_STREAM="$TMP/chat-stream-bench.json"
        check_target || { tail -n 30 "$TMP/sluice-$variant.log" >&2; die "sluice ($variant) does not answer as expected"; }
        measure
    fi
    if ((full)) && wants prompt; then
        # The same process: RSS is the process's peak over both series.
        T_NAME="sluice-full-prompt" T_URL="http://127.0.0.1:$PORT/v1/prompts/bench"
        T_BODY="$TMP/prompt.json" T_BODY_STREAM="$TMP/prompt-stream.json"
        check_target || { tail -n 30 "$TMP/sluice-$variant.log" >&2; die "sluice's prompt endpoint does not answer as expected"; }
        measure
    fi
    if ((full)); then
        wait_idle
        ledger_check "$PORT" "$dir"
        pg_cpu_note
    fi
    stop "$T_PID"
    T_PG=""
    # PostgreSQL gets every core back as soon as the full path is done (and at exit in any case).
    unpin_postgres
}

target_litellm() {
    local cmd dir="$TMP/litellm"
    cmd=$(litellm_cmd) || { PEER_NOTES+=("LiteLLM: not installed (\`--with-peers\` installs it)"); return 0; }
    mkdir -p "$dir"
    free_port
    cat >"$dir/config.yaml" <<EOF
# Generated by bench/run.sh: LiteLLM's proxy in front of the simulator, one deployment, no database.
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:$SIM_PORT/v1
      api_key: sk-upstream
litellm_settings:
  set_verbose: false
general_settings:
  master_key: sk-bench
EOF
    # No database or cache from the environment; the model cost map bundled with the package instead of
    # fetching it from the internet at start; no telemetry; no admin UI; errors only in the log (uvicorn's
    # access log is off at that level). One uvicorn worker: a single Python process.
    start litellm 0 env -u DATABASE_URL -u DIRECT_URL -u LITELLM_MASTER_KEY -u REDIS_HOST -u REDIS_URL -C "$dir" \
        LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY_DISABLED=True DISABLE_ADMIN_UI=True LITELLM_LOG=ERROR \
        "$cmd" --config "$dir/config.yaml" --host 127.0.0.1 --port "$PORT" --num_workers 1
    T_PID=$PID
    local t0=$SECONDS
    # Its start-up imports a lot: 10-30 s on a quiet machine, more on a busy one.
    if ! wait_peer "http://127.0.0.1:$PORT/health/liveliness" 300 "$T_PID" litellm; then
        PEER_NOTES+=("LiteLLM: did not start (log: $TMP/litellm.log; --keep-tmp keeps it); skipped")
        stop "$T_PID"
        return 0
    fi
    log "  litellm ready after $((SECONDS - t0)) s"
    T_NAME=litellm T_URL="http://127.0.0.1:$PORT/v1/chat/completions" T_AUTH=sk-bench T_HEADERS=""
    T_BODY="$TMP/chat-bench.json" T_BODY_STREAM="$TMP/chat-stream-bench.json"
    if check_target; then
        measure
        log "  litellm: $(proc_tree "$T_PID" | wc -l) process(es) at the end"
    else
        tail -n 20 "$TMP/litellm.log" >&2 || true
        PEER_NOTES+=("LiteLLM: started but did not answer as expected; skipped")
    fi
    stop "$T_PID"
}

target_portkey() {
    local entry
    entry=$(portkey_entry) || { PEER_NOTES+=("Portkey: not installed (\`--with-peers\` installs it)"); return 0; }
    if ! portkey_hono_ok; then
        PEER_NOTES+=("Portkey: its @hono/node-server is $(portkey_hono_version || echo '?'), whose streams fail with a 500 (TypeError: immutable); \`--with-peers\` reinstalls it with 2.x; skipped")
        return 0
    fi
    free_port
    # No configuration: each request names the provider and the upstream in its headers. --headless: no
    # console UI (and no log capture for it).
    start portkey 0 env -C "$TMP" node "$entry" "--port=$PORT" --headless
    T_PID=$PID
    if ! wait_peer "http://127.0.0.1:$PORT/" 60 "$T_PID" portkey; then
        PEER_NOTES+=("Portkey: did not start (log: $TMP/portkey.log; --keep-tmp keeps it); skipped")
        stop "$T_PID"
        return 0
    fi
    T_NAME=portkey T_URL="http://127.0.0.1:$PORT/v1/chat/completions" T_AUTH=sk-upstream
    T_HEADERS="x-portkey-provider: openai|x-portkey-custom-host: http://127.0.0.1:$SIM_PORT/v1"
    T_BODY="$TMP/chat-bench-model.json" T_BODY_STREAM="$TMP/chat-stream-bench-model.json"
    if check_target; then
        measure
        log "  portkey: $(proc_tree "$T_PID" | wc -l) process(es) at the end"
    else
        tail -n 20 "$TMP/portkey.log" >&2 || true
        PEER_NOTES+=("Portkey: started but did not answer as expected; skipped")
    fi
    stop "$T_PID"
}

# === report ===

versions() {
    echo "- sluice: $("$SLUICE" --version 2>/dev/null || echo "target/release/sluice") (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([[ -n $(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -n1) ]] && echo ", with uncommitted changes")), $(rustc --version 2>/dev/null || echo 'rustc ?')$([[ -n $SLUICE_BIN ]] && echo "; binary $SLUICE_BIN built $(date -u -r "$SLUICE" '+%Y-%m-%d %H:%M UTC')")"
    echo "- load generator: $(wrk -v 2>&1 | head -n1 | sed 's/ Copyright.*//')$(command -v oha >/dev/null && echo "; $(oha --version 2>/dev/null) for the fixed 1,000 req/s p99")"
    echo "- nginx: $({ command -v nginx >/dev/null && nginx -v; } 2>&1 || /usr/sbin/nginx -v 2>&1)"
    echo "- curl: $(curl --version | head -n1 | cut -d' ' -f1-2)"
    local cmd
    if cmd=$(litellm_cmd); then
        echo "- LiteLLM: $("$(dirname "$cmd")/python" -c 'import importlib.metadata as m, platform; print(m.version("litellm"), "with uvicorn", m.version("uvicorn") + ", Python", platform.python_version())' 2>/dev/null || echo '?')"
    fi
    if cmd=$(portkey_entry); then
        echo "- Portkey gateway: $(node -p "require('$(dirname "$(dirname "$cmd")")/package.json').version" 2>/dev/null || echo '?') with @hono/node-server $(portkey_hono_version || echo '?'), node $(node --version)"
    fi
}

machine() {
    echo "- $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n1)), $(free -g | awk '/^Mem:/ {print $2}') GiB memory"
    echo "- kernel $(uname -sr)"
    echo "- date $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- 1-minute load average when measuring started: $LOAD_AT_START; at the end: $(cut -d' ' -f1 /proc/loadavg)"
}

LABELS=(
    "direct:direct (simulator alone)"
    "nginx:nginx (floor)"
    "sluice-bare:Sluice bare proxy"
    "sluice-full:Sluice full path"
    "sluice-full-prompt:Sluice full, prompt template"
    "litellm:LiteLLM proxy"
    "portkey:Portkey gateway"
)
label_of() {
    local entry
    for entry in "${LABELS[@]}"; do [[ ${entry%%:*} == "$1" ]] && { echo "${entry#*:}"; return; }; done
    echo "$1"
}

# The table: one row per target, mode and load.
table() {
    echo "| target | stream | load | req/s | p50 ms | p90 ms | p99 ms | Δp50 ms | Δp99 ms | CPU/req µs | core used | TTFB p50/p99 ms | ΔTTFB p50/p99 ms | peak RSS MB | errors | other work core 0/1 |"
    echo "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    local name
    for name in $(awk '!seen[$1]++ {print $1}' "$TMP/results.txt"); do
        awk -v name="$name" -v label="$(label_of "$name")" -v tck="$CLK_TCK" -v paced="$PACED_CONNS conns, ${PACED_DELAY_MS} ms pause" -v maxc="$MAX_CONNS conns" '
            FILENAME ~ /results/ { key = $1 " " $2 " " $3; req[key] = $4; dur[key] = $5; err[key] = $6
                p50[key] = $7; p90[key] = $8; p99[key] = $9; ticks[key] = $10; wall[key] = $11
                o0[key] = $12; o1[key] = $13; drain[key] = $14; conns[key] = $15; next }
            FILENAME ~ /ttfb/ { t50[$1] = $2; t99[$1] = $3; next }
            FILENAME ~ /rss/ { rss[$1] = $2; next }
            END {
                n = split("nonstream paced,nonstream max,stream paced,stream max", rows, ",")
                for (i = 1; i <= n; i++) {
                    split(rows[i], mk, " "); mode = mk[1]; kind = mk[2]
                    key = name " " mode " " kind; base = "direct " mode " " kind
                    if (!(key in req)) continue
                    rps = req[key] / (dur[key] / 1e6)
                    # A paced run under 90% of the paced rate of the direct call: its figures are at the rate shown.
                    slow = ""
                    if (kind == "paced" && name != "direct" && (base in req) && rps < 0.9 * req[base] / (dur[base] / 1e6)) slow = " †"
                    cpu = req[key] > 0 ? ticks[key] / tck * 1e6 / req[key] : 0
                    used = ticks[key] / tck / (wall[key] / 1e9) * 100
                    d50 = "–"; d99 = "–"; tt = "–"; dt = "–"
                    # No request completed within the run: no latency to give.
                    l50 = "–"; l90 = "–"; l99 = "–"
                    if (req[key] > 0) {
                        l50 = sprintf("%.2f", p50[key] / 1000); l90 = sprintf("%.2f", p90[key] / 1000)
                        l99 = sprintf("%.2f", p99[key] / 1000)
                    }
                    if (kind == "paced" && name != "direct" && (base in req) && req[key] > 0) {
                        d50 = sprintf("%+.2f", (p50[key] - p50[base]) / 1000)
                        d99 = sprintf("%+.2f", (p99[key] - p99[base]) / 1000)
                    }
                    if (mode == "stream" && kind == "paced" && (name in t50)) {
                        tt = sprintf("%.2f / %.2f", t50[name], t99[name])
                        if (name != "direct" && ("direct" in t50))
                            dt = sprintf("%+.2f / %+.2f", t50[name] - t50["direct"], t99[name] - t99["direct"])
                    }
                    cpucell = (req[key] > 0 ? sprintf("%.0f", cpu) : "–"); if (name == "direct") cpucell = cpucell " (simulator)"
                    # Still busy after the run: up to one request per connection was in flight, its CPU
                    # counted but not the request, so the figure lies between these two bounds.
                    if (drain[key] >= 1000) {
                        lo = ticks[key] / tck * 1e6 / (req[key] + conns[key])
                        cpucell = (req[key] > 0 ? sprintf("%.0f–%.0f ‡", lo, cpu) : sprintf("≥ %.0f ‡", lo))
                    }
                    busy = (o0[key] > 10 || o1[key] > 10) ? " ⚠" : ""
                    printf "| %s | %s | %s | %.0f%s | %s | %s | %s | %s | %s | %s | %.0f%% | %s | %s | %.1f | %d | %d%% / %d%%%s |\n",
                        label, (mode == "stream" ? "yes" : "no"), (kind == "paced" ? paced : maxc), rps, slow,
                        l50, l90, l99, d50, d99, cpucell, used, tt, dt,
                        rss[name] / 1024, err[key], o0[key], o1[key], busy
                }
            }' "$TMP/results.txt" "$TMP/ttfb.txt" "$TMP/rss.txt"
    done
}

# A note when other work shared a core during some runs.
disturbed_note() {
    awk '$12 > 10 || $13 > 10 {n++} END {
        if (n) printf "- ⚠ marks the %d run(s) during which other processes (not the benchmark) took more than 10%% of core 0 or core 1: their figures are disturbed, latency and throughput most.\n", n
    }' "$TMP/results.txt"
}

# A note for the paced runs that fell short of the pace, and one for every run or TTFB series with errors.
load_notes() {
    awk -v tck="$CLK_TCK" -v ttfbn="$TTFB_REQUESTS" '
        FILENAME ~ /results/ { key = $1 " " $2 " " $3; req[key] = $4; dur[key] = $5; err[key] = $6
            drain[key] = $14; conns[key] = $15; order[++n] = key; next }
        FILENAME ~ /ttfb/ { bad[$1] = $4; next }
        END {
            for (i = 1; i <= n; i++) {
                k = order[i]; split(k, p, " "); base = "direct " p[2] " " p[3]
                rps = req[k] / (dur[k] / 1e6)
                if (p[3] == "paced" && p[1] != "direct" && (base in req) && rps < 0.9 * req[base] / (dur[base] / 1e6))
                    short = short sprintf("%s%s %s (%.0f of %.0f req/s)", (short == "" ? "" : ", "), p[1],
                        (p[2] == "stream" ? "streaming" : "non-streaming"), rps, req[base] / (dur[base] / 1e6))
                if (drain[k] >= 1000)
                    busy = busy sprintf("%s%s %s %s (%.1f s, %d connections)", (busy == "" ? "" : ", "), p[1],
                        (p[2] == "stream" ? "streaming" : "non-streaming"), p[3], drain[k] / 1000, conns[k])
                if (err[k] > 0)
                    errs = errs sprintf("%s%s %s %s: %d of %d", (errs == "" ? "" : "; "), p[1],
                        (p[2] == "stream" ? "streaming" : "non-streaming"), p[3], err[k], req[k])
            }
            for (t in bad) if (bad[t] > 0) errs = errs sprintf("%s%s TTFB: %d of %d answers not 200", (errs == "" ? "" : "; "), t, bad[t], ttfbn)
            if (short != "")
                print "- † the paced run reached under 90% of the direct call'"'"'s paced rate (" short "): each connection waits for its answer before its pause, so slower answers lower the rate, and these latency, overhead and CPU figures are at the rate shown, not at ~1,000 req/s."
            if (busy != "")
                print "- ‡ still serving requests after the run ended (" busy "): up to one request per connection was in flight at the end, its CPU time counted but the request not, so CPU/req is given as a range (CPU over requests + connections, CPU over requests) and req/s is low by up to connections / duration. A longer --duration narrows it."
            if (errs != "")
                print "- Errors (answers other than 2xx/3xx, socket errors and 10 s timeouts, counted by wrk; latencies include them): " errs "."
        }' "$TMP/results.txt" "$TMP/ttfb.txt"
}

# How each Sluice path fares against the issue's targets.
targets_summary() {
    awk -v tck="$CLK_TCK" '
        FILENAME ~ /results/ { key = $1 " " $2 " " $3; req[key] = $4; dur[key] = $5; p99[key] = $9; ticks[key] = $10; next }
        FILENAME ~ /ttfb/ { t50[$1] = $2; next }
        FILENAME ~ /rss/ { rss[$1] = $2; next }
        function cpu(k) { return req[k] > 0 ? ticks[k] / tck * 1e6 / req[k] : -1 }
        function verdict(ok) { return ok ? "meets" : "misses" }
        END {
            m = split("sluice-full sluice-bare", names, " ")
            for (i = 1; i <= m; i++) {
                n = names[i]; if (!((n " nonstream max") in req)) continue
                c1 = cpu(n " nonstream max"); c2 = cpu(n " stream max")
                d99 = (p99[n " nonstream paced"] - p99["direct nonstream paced"]) / 1000
                dt = t50[n] - t50["direct"]; r = rss[n] / 1024
                printf "- %s: CPU %.0f µs per non-streaming request at max load (target ≤ 50: %s; %.0f µs paced), %.0f µs per 20-chunk stream (≤ 80: %s; %.0f µs paced); p99 overhead %+.2f ms at ~1k req/s (< 0.5: %s); TTFB overhead %+.2f ms at p50 (< 0.3: %s); peak RSS %.1f MB (< 80: %s)\n",
                    (n == "sluice-full" ? "Sluice full path" : "Sluice bare proxy"),
                    c1, verdict(c1 <= 50), cpu(n " nonstream paced"), c2, verdict(c2 <= 80), cpu(n " stream paced"),
                    d99, verdict(d99 < 0.5), dt, verdict(dt < 0.3), r, verdict(r < 80)
            }
            dk = "direct nonstream max"
            if (dk in req) {
                best = 0; who = ""
                for (k in req) { split(k, p, " "); if (p[1] != "direct" && p[2] == "nonstream" && p[3] == "max") {
                    rps = req[k] / (dur[k] / 1e6); if (rps > best) { best = rps; who = p[1] } } }
                direct = req[dk] / (dur[dk] / 1e6)
                printf "- The simulator alone served %.0f non-streaming req/s with the load generator on the same core (%.0f µs of its CPU per request); the fastest proxy reached %.0f req/s (%s). ",
                    direct, cpu(dk), best, who
                if (best < 0.9 * direct) print "Every proxy stayed well below what the upstream side can serve, so the simulator was not the bottleneck."
                else print "That is close to what the upstream side can serve, so for it the figure is a lower bound."
            }
        }' "$TMP/results.txt" "$TMP/ttfb.txt" "$TMP/rss.txt"
}

section() {
    echo "## End-to-end proxy benchmark"
    echo
    echo "Written by \`bash bench/run.sh\` (see the options at the top of the script); rerun it when the hot path changes."
    echo "The proxy under test runs alone on core 0 (\`taskset -c 0\`); the upstream (\`sluice simulate --reply-tokens 20\`,"
    echo "no added latency, 20 chunks per stream) and the load generator share core 1. Every request is a chat completion"
    echo "with a ~500-token prompt and \`max_tokens: 64\`. *paced*: $PACED_CONNS connections each pausing ${PACED_DELAY_MS} ms after every"
    echo "answer (about 1,000 req/s; the latency and overhead figures). *max*: $MAX_CONNS connections, no pause (the most req/s)."
    echo "Each run lasts ${DURATION} s after a 2 s warm-up. Δ: versus calling the simulator directly in the same run."
    echo "CPU/req: utime+stime of the proxy process over the run divided by its requests (for *direct*, the simulator's)."
    echo "*core used*: that CPU time over the run's wall time (100% = core 0 saturated). TTFB: ${TTFB_REQUESTS} sequential"
    echo "streaming requests on one keep-alive connection (\`curl -w %{time_starttransfer}\`). Peak RSS: VmHWM at the end of"
    echo "the target's series. *other work core 0/1*: CPU time that processes other than the benchmark's used on each core"
    echo "during the run (from /proc/stat, less the proxy's, the simulator's and wrk's own time), in % of the run."
    echo "Sluice logs every request at \`$LOG_LEVEL\` (JSON, to a file) and nginx writes its access log."
    if grep -q '^sluice-bare ' "$TMP/results.txt"; then
        echo "*Sluice bare proxy*: one \`openai_compatible\` provider on the simulator, a static key from \`[auth] keys\`, no"
        echo "tenant and no budgets; it still records every request in the usage ledger of the store's default, a SQLite file."
    fi
    if grep -qE '^sluice-full(-prompt)? ' "$TMP/results.txt"; then
        echo "*Sluice full path*: everything on, as issue 7 defines it. A tenant with rpm, tpm and a USD budget (set high, so"
        echo "the checks run but never refuse) and a virtual key of it, both made with the CLI before the gateway starts"
        echo "(\`sluice tenants create\`, \`sluice keys create\`); the requests carry that key (no static keys are configured)."
        echo "Token counting for the budgets, rpm/tpm budgets on the upstream key, routing, a price on the deployment (so every"
        echo "request is costed and charged to the tenant's budget), the prompt template registry, and the usage ledger in"
        echo "$STORE_DESC."
        if [[ -s $TMP/pgcpu.txt ]]; then
            echo "PostgreSQL's processes ran on core 1 with the upstream and the load generator, so the gateway's core is its own;"
            echo "the database's CPU per request is in the notes below."
        fi
        echo "After the series the ledger is checked against the gateway's upstream calls and the answers received (notes)."
    fi
    if grep -q '^litellm ' "$TMP/results.txt"; then
        echo "LiteLLM's proxy runs as shipped with one uvicorn worker, a config.yaml with one \`openai/bench-model\` deployment"
        echo "on the simulator, a master key and no database, logging errors only (\`LITELLM_LOG=ERROR\`: no line per request)."
    fi
    if grep -q '^portkey ' "$TMP/results.txt"; then
        echo "Portkey's gateway runs on Node with no configuration: each request names the provider and the upstream in its"
        echo "headers (\`x-portkey-provider: openai\`, \`x-portkey-custom-host\`); it keeps no request log. It holds back the"
        echo "first event of every stream by 25 ms (a fixed \`setTimeout\` in its stream handler): its streaming latencies"
        echo "include that wait; its time to first byte does not (the headers go out before it)."
    fi
    if grep -qE '^(litellm|portkey) ' "$TMP/results.txt"; then
        echo "The peers are pinned to core 0 like Sluice; their CPU and peak RSS are summed over their process tree."
    fi
    echo
    if [[ -n ${LOAD_NOTE:-} ]]; then echo "**Note:** $LOAD_NOTE"; echo; fi
    table
    echo
    if [[ -s $TMP/oha.txt ]]; then
        echo "p99 at a fixed 1,000 req/s (\`oha -q 1000\`): $(awk '{printf "%s%s %.2f ms", (NR > 1 ? ", " : ""), $1, $2}' "$TMP/oha.txt")."
    else
        echo "oha is not installed, so there is no exact fixed-rate figure; the paced wrk runs stand in for \"at 1,000 req/s\"."
    fi
    echo
    echo "Against the targets of issue 7:"
    echo
    targets_summary
    disturbed_note
    load_notes
    if [[ -n $LOAD_NOTE ]]; then
        echo "- With other work on the machine, p99 latencies swing by milliseconds from run to run (a negative"
        echo "  overhead is that noise), so the p99 and TTFB verdicts need a rerun on a quiet machine; CPU per request,"
        echo "  the share of the core used and RSS are the figures that hold up."
    fi
    for note in "${STORE_NOTES[@]}" "${PEER_NOTES[@]}"; do echo "- $note"; done
    echo
    echo "### Machine and tools"
    echo
    machine
    versions
    echo
    echo "### Commands"
    echo
    echo '```sh'
    # The virtual key is a secret of a database dropped at exit; the commands show its name only.
    printf '%s\n' "${CMDS[@]}" | sed "s#$TMP#\$TMP#g; s#$ROOT/##g${VKEY:+; s#$VKEY#\$BENCH_KEY#g}"
    echo '```'
    echo
}

# Replaces the "End-to-end proxy benchmark" section of docs/benchmarks.md, keeping every other section.
write_docs() {
    local new="$TMP/section.md" out="$TMP/benchmarks.md"
    section >"$new"
    if [[ ! -f $DOCS ]]; then
        printf '# Benchmarks\n\nHow fast Sluice is and what it costs, measured on this project'"'"'s machines. Each section says how to\nreproduce it.\n\n' >"$DOCS"
    fi
    awk -v new="$new" '
        function emit() { while ((getline line < new) > 0) print line; done = 1 }
        /^(```|~~~)/ { fenced = !fenced }
        /^## / && !fenced { if (skipping) skipping = 0
                 if ($0 == "## End-to-end proxy benchmark") { skipping = 1; emit(); next } }
        !skipping { print; last = $0 }
        END { if (!done) { if (last != "") print ""; emit() } }
    ' "$DOCS" >"$out"
    cp "$out" "$DOCS"
    log "wrote the section \"End-to-end proxy benchmark\" of docs/benchmarks.md"
}

# === main ===

PEER_NOTES=()
STORE_NOTES=()
LOAD_NOTE=""
LOAD_AT_START=""

install_tools
((WITH_PEERS)) && install_peers
if ((BUILD)); then
    log "cargo build --release -p sluice"
    cargo build --release -p sluice >&2
fi
[[ -x $SLUICE ]] || die "$SLUICE is missing (build it, or drop --no-build)"
((WAIT)) && wait_for_quiet
LOAD_AT_START=$(cut -d' ' -f1 /proc/loadavg)
if [[ -z $LOAD_NOTE ]] && ! awk -v l="$LOAD_AT_START" 'BEGIN {exit !(l < 1.0)}'; then
    LOAD_NOTE="The 1-minute load average was $LOAD_AT_START when measuring started (other work on the machine), so the figures are noisier than on a quiet machine."
fi
log "load generator: wrk$(command -v oha >/dev/null && echo ", and oha for the fixed 1,000 req/s p99")"

write_lua
write_bodies
: >"$TMP/results.txt"
: >"$TMP/ttfb.txt"
: >"$TMP/rss.txt"
: >"$TMP/answered.txt"
: >"$TMP/pgcpu.txt"
start_simulator
target_direct
wants nginx && target_nginx
wants bare && target_sluice bare
{ wants full || wants prompt; } && target_sluice full
wants litellm && target_litellm
wants portkey && target_portkey

TABLE=$(table)
echo
echo "$TABLE"
echo
targets_summary
disturbed_note
load_notes
for note in "${STORE_NOTES[@]}" "${PEER_NOTES[@]}"; do echo "- $note"; done
((WRITE_DOCS)) && write_docs
exit 0
