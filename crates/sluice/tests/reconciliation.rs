//! The reconciliation drill (issue 12): over a thousand mixed requests through the gateway (streams and
//! not, streams the client leaves, streams the vendor cuts, failovers on 500s and on streams that break
//! before their first chunk, a 429 storm, reasoning and cache reads, the database down for part of the
//! run, a stop under load and a restart on the same ledger), then the ledger against the simulated
//! vendors' bills, category by category: exactly for every call the vendor reported, within the
//! documented bound for the calls the gateway had to estimate; no row twice; each tenant's enforced spend
//! equal to its ledger rows' sum. On SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_api::{TokenUsage, UsageSource};
use sluice_simulate::{Fault, SimConfig};
use sluice_store::{ExportFilter, GroupBy, SpendFilter, UsageRow};

const ADMIN: &str = "sk-reconcile-admin-0123456789abcdefghijk";

/// Requests in the drill, and the clients sending them at once.
const TOTAL: usize = 1200;
const WORKERS: usize = 16;
/// The database goes away once this many requests were answered, comes back after `RESTORE`.
const CUT: usize = 300;
const RESTORE: usize = 650;
/// The first gateway stops under load once this many were answered; a second takes its place.
const STOP: usize = 960;

/// Tokens a stream the client left may have had in transit when it left: generated and billed by the
/// vendor, not yet read by the gateway. The simulator paces at 100 tokens a second and the gateway stops
/// reading at once, so this is a chunk or two; see README's "Metering".
const IN_TRANSIT_TOKENS: u64 = 4;

/// The simulated vendors, each a provider of its own, so each bill is compared with its provider's calls.
struct Vendors {
    /// Answers everything whole: the vendor reports the usage.
    steady: SimServer,
    /// 12 requests a minute: a 429 storm, the gateway fails over.
    storm: SimServer,
    /// A 500 on one request in five: not billed, the gateway fails over.
    flaky: SimServer,
    /// A slow stream (100 tokens a second) that clients leave after a few chunks.
    slow: SimServer,
    /// A stream the vendor resets after five chunks, sent at 400 tokens a second so that the client sees
    /// its first chunks before the reset.
    cut: SimServer,
    /// A stream that breaks before its first chunk: billed input, the gateway fails over.
    early: SimServer,
}

impl Vendors {
    async fn start() -> Self {
        let sim = |config: SimConfig| SimServer::start(config);
        Self {
            steady: sim(SimConfig::default()).await,
            storm: sim(SimConfig {
                rpm: Some(12),
                ..SimConfig::default()
            })
            .await,
            flaky: sim(SimConfig {
                error_rate: 0.2,
                ..SimConfig::default()
            })
            .await,
            slow: sim(SimConfig {
                tokens_per_sec: Some(100.0),
                reply_tokens: 60,
                ..SimConfig::default()
            })
            .await,
            cut: sim(SimConfig {
                fault: Some(Fault::ResetAfter(5)),
                tokens_per_sec: Some(400.0),
                reply_tokens: 30,
                ..SimConfig::default()
            })
            .await,
            early: sim(SimConfig {
                fault: Some(Fault::ResetAfter(0)),
                ..SimConfig::default()
            })
            .await,
        }
    }

    fn each(&self) -> [(&'static str, &SimServer); 6] {
        [
            ("steady", &self.steady),
            ("storm", &self.storm),
            ("flaky", &self.flaky),
            ("slow", &self.slow),
            ("cut", &self.cut),
            ("early", &self.early),
        ]
    }

    /// Waits until no simulated stream is open (a stream is billed its output when it ends).
    async fn quiet(&self) {
        for (name, sim) in self.each() {
            let ended = eventually(Duration::from_secs(10), || {
                let s = sim.stats();
                s.streams_started == s.streams_completed + s.streams_cancelled
            })
            .await;
            assert!(ended, "{name} still has streams open: {:?}", sim.stats());
        }
    }
}

fn config(vendors: &Vendors, database: &Database, spool: &std::path::Path) -> String {
    let provider = |name: &str, sim: &SimServer, keys: &[&str]| {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai_compatible\"\nbase_url = \"{}\"\nkeys = {keys:?}\n",
            sim.base_url()
        )
    };
    let deployment = |provider: &str, model: &str, priority: u32| {
        format!(
            "[[models.deployments]]\nprovider = \"{provider}\"\nmodel = \"{model}\"\npriority = {priority}\n\
             price = {{ input = 2.0, output = 8.0, cached_input = 0.5 }}\n"
        )
    };
    format!(
        r#"
[store]
url = "{url}"
spool = "{spool}"
prices = "{prices}"
refresh_ms = 200
[auth]
keys = ["{CLIENT_KEY}"]
admin_key = "{ADMIN}"
[upstream]
connect_timeout_ms = 1000
first_byte_timeout_ms = 5000
idle_timeout_ms = 5000
max_attempts = 4
{providers}
[[models]]
name = "m"
{m}
[[models]]
name = "think"
{think}
[[models]]
name = "failover"
{failover}
[[models]]
name = "slow"
{slow}
[[models]]
name = "cut"
{cut}
"#,
        url = database.url(),
        spool = spool.display(),
        prices = repo_root().join("config/prices.toml").display(),
        providers = [
            provider("steady", &vendors.steady, &["s1", "s2"]),
            provider("storm", &vendors.storm, &["t1"]),
            provider("flaky", &vendors.flaky, &["f1"]),
            provider("slow", &vendors.slow, &["w1"]),
            provider("cut", &vendors.cut, &["c1"]),
            provider("early", &vendors.early, &["e1"]),
        ]
        .concat(),
        m = [
            deployment("storm", "vendor-m", 0),
            deployment("flaky", "vendor-m", 0),
            deployment("steady", "vendor-m", 1),
        ]
        .concat(),
        // An o-series model name: the simulator reasons twice as many tokens as it shows.
        think = deployment("steady", "o4-mini", 0),
        failover = [deployment("early", "vendor-f", 0), deployment("steady", "vendor-f", 1)].concat(),
        slow = deployment("slow", "vendor-slow", 0),
        cut = deployment("cut", "vendor-cut", 0),
    )
}

async fn admin(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, format!("{base}{path}")).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What kind of request `i` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Model `m` (storm, flaky, steady), streamed or not, read whole.
    Plain,
    /// A long conversation on `m`, read whole: its repeats read from the vendor's prompt cache.
    Long,
    /// Model `think`: reasoning tokens.
    Think,
    /// A stream on `failover`: the first call breaks before its first chunk.
    Failover,
    /// A stream on `slow`, left after three events.
    Abandoned,
    /// A stream on `cut`, which the vendor resets.
    Cut,
}

fn kind(i: usize) -> Kind {
    match i % 20 {
        0..=6 => Kind::Plain,
        7..=8 => Kind::Long,
        9..=10 => Kind::Think,
        11..=13 => Kind::Failover,
        14..=16 => Kind::Abandoned,
        _ => Kind::Cut,
    }
}

fn body(i: usize) -> Value {
    let kind = kind(i);
    let stream = match kind {
        Kind::Plain | Kind::Long | Kind::Think => !i.is_multiple_of(3),
        _ => true,
    };
    let model = match kind {
        Kind::Plain | Kind::Long => "m",
        Kind::Think => "think",
        Kind::Failover => "failover",
        Kind::Abandoned => "slow",
        Kind::Cut => "cut",
    };
    let messages = if kind == Kind::Long {
        // A manual of about 1,300 tokens, one of three, so repeats on a key read it from the cache.
        let manual = format!("Manual {} of the river gates. ", i % 3).repeat(170);
        json!([{"role": "system", "content": manual}, {"role": "user", "content": format!("Question {i}?")}])
    } else {
        json!([{"role": "user", "content": format!("Request {i} about rivers{}", " and lakes".repeat(i % 7))}])
    };
    let mut body = json!({"model": model, "stream": stream, "messages": messages});
    if kind != Kind::Think {
        body["max_tokens"] = json!(8 + i % 13);
    }
    if stream && i.is_multiple_of(2) {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Sends request `i` and returns the status the client got, or `None` when it reached no gateway.
async fn send(client: &reqwest::Client, base: &str, key: &str, i: usize) -> Option<u16> {
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", format!("drill-{i}"))
        .json(&body(i))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let mut events = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        events += chunk.windows(6).filter(|w| w == b"data: ").count();
        if kind(i) == Kind::Abandoned && events >= 3 {
            // The client goes away mid-stream.
            return Some(status);
        }
    }
    Some(status)
}

/// The usage of every call of `rows` to `provider` whose counts came from `source`.
fn calls(rows: &[UsageRow], provider: &str, source: UsageSource) -> (TokenUsage, usize) {
    rows.iter()
        .flat_map(|r| &r.attempt_log)
        .filter(|a| &*a.provider == provider && a.source == source)
        .fold((TokenUsage::default(), 0), |(sum, n), a| (sum.plus(&a.usage), n + 1))
}

/// Every ledger row, oldest first.
async fn every_row(gateway: &GatewayServer) -> Vec<UsageRow> {
    let mut export = gateway.store().export(ExportFilter::default()).page_size(5000);
    let mut rows = Vec::new();
    while let Some(page) = export.next_page().await.unwrap() {
        rows.extend(page);
    }
    rows
}

/// Waits (at most `limit`) until the writer holds nothing and the ledger has `rows` rows; returns them.
async fn drained(gateway: &GatewayServer, rows: usize, limit: Duration) -> Vec<UsageRow> {
    let deadline = Instant::now() + limit;
    loop {
        let s = gateway.writer_stats();
        if s.database_up && s.queue_depth == 0 && s.spool_pending == 0 {
            let found = every_row(gateway).await;
            if found.len() >= rows {
                return found;
            }
        }
        assert!(Instant::now() < deadline, "the ledger never had {rows} rows: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reconcile(mut database: Database, label: &str) {
    let started = Instant::now();
    let vendors = Vendors::start().await;
    let dir = scratch_dir(&format!("reconcile-{label}"));
    let spool = dir.join("usage.spool");
    let toml = config(&vendors, &database, &spool);
    let first = GatewayServer::start(&toml).await;

    // Two tenants with budgets that hold (about a cent per request), a tenant without one, and the
    // configured client key (tenant `default`).
    let mut keys = Vec::new();
    for (tenant, budget) in [("acme", Some(50.0)), ("globex", Some(20.0)), ("initech", None)] {
        let mut spec = json!({"name": tenant, "budget_period": "month"});
        if let Some(budget) = budget {
            spec["budget_usd"] = json!(budget);
        }
        let base = first.server.url();
        let (status, body) = admin(&base, reqwest::Method::POST, "/admin/tenants", Some(spec)).await;
        assert_eq!(status, 201, "{body}");
        let path = format!("/admin/tenants/{tenant}/keys");
        let (status, key) = admin(&base, reqwest::Method::POST, &path, None).await;
        assert_eq!(status, 201, "{key}");
        keys.push(key["key"].as_str().unwrap().to_owned());
    }
    keys.push(CLIENT_KEY.to_owned());
    let keys = Arc::new(keys);

    let (base_tx, base_rx) = tokio::sync::watch::channel(first.server.url());
    let (allow, allowed) = tokio::sync::watch::channel(CUT);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<BTreeMap<usize, Option<u16>>>> = Arc::default();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (next, done) = (next.clone(), done.clone());
            let (keys, outcomes) = (keys.clone(), outcomes.clone());
            let (mut allowed, mut base_rx) = (allowed.clone(), base_rx.clone());
            let client = client();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= TOTAL {
                        return;
                    }
                    allowed.wait_for(|limit| i < *limit).await.unwrap();
                    let base = base_rx.borrow_and_update().clone();
                    let status = send(&client, &base, &keys[i % keys.len()], i).await;
                    outcomes.lock().unwrap().insert(i, status);
                    done.fetch_add(1, Ordering::SeqCst);
                    if status.is_none() {
                        // The gateway stopped: the next request goes to the one that replaces it.
                        base_rx.changed().await.unwrap();
                    }
                }
            })
        })
        .collect();
    let reached = |count: usize| {
        let done = done.clone();
        async move {
            let ok = eventually(Duration::from_secs(60), || done.load(Ordering::SeqCst) >= count).await;
            assert!(ok, "only {} of {count} requests done", done.load(Ordering::SeqCst));
        }
    };

    // The database goes away under load, and comes back under load.
    reached(CUT).await;
    database.cut().await;
    allow.send_replace(RESTORE + WORKERS);
    let noticed = eventually(Duration::from_secs(20), || first.writer_stats().write_errors > 0).await;
    assert!(
        noticed,
        "the writer never noticed the outage: {:?}",
        first.writer_stats()
    );
    reached(RESTORE).await;
    database.restore().await;
    allow.send_replace(TOTAL);

    // The first gateway stops while requests are in flight, as on SIGTERM: those finish, its ledger is
    // flushed (rows the database did not take in time stay in the spool for the next start).
    reached(STOP).await;
    let open = |sim: &SimServer| {
        let s = sim.stats();
        s.streams_started - s.streams_completed - s.streams_cancelled
    };
    // At a moment when the gateway is relaying a stream.
    let relaying = eventually(Duration::from_secs(5), || open(&vendors.slow) + open(&vendors.cut) > 0).await;
    assert!(relaying, "no stream open to stop under");
    let streams_open = open(&vendors.slow) + open(&vendors.cut);
    let stopping = started.elapsed();
    let first_stats = first.stop(Duration::from_secs(10)).await.unwrap();
    assert_eq!((first_stats.rejected, first_stats.dropped), (0, 0), "{first_stats:?}");
    // Requests sent as it stopped reached no gateway (their clients got a connection error, as from a
    // stopping process); the next ones go to the second, on the same database and spool.
    let second = GatewayServer::start(&toml).await;
    base_tx.send_replace(second.server.url());
    for worker in workers {
        worker.await.unwrap();
    }
    vendors.quiet().await;

    // === The ledger against the bills ===
    let outcomes = outcomes.lock().unwrap().clone();
    let answered = outcomes.values().filter(|s| s.is_some()).count();
    let rows = drained(&second, answered, Duration::from_secs(30)).await;
    let stats = second.writer_stats();
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");

    // No row twice: gateway ids and the drill's request ids are unique, and every request the gateway
    // answered has its row (one that reached it while it stopped may have one or not).
    let ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "a row id twice");
    let mut by_request: BTreeMap<usize, &UsageRow> = BTreeMap::new();
    for row in &rows {
        let i: usize = row
            .client_request_id
            .as_deref()
            .unwrap()
            .strip_prefix("drill-")
            .unwrap()
            .parse()
            .unwrap();
        assert!(by_request.insert(i, row).is_none(), "request {i} has two rows");
    }
    for (i, status) in &outcomes {
        if let Some(status) = status {
            let row = by_request
                .get(i)
                .unwrap_or_else(|| panic!("request {i} ({status}) has no row"));
            // A stream ends as its row says: left by the client (499), cut after its head (502).
            let ended = match (kind(*i), *status) {
                (Kind::Abandoned, 200) => 499,
                (Kind::Cut, 200) => 502,
                (_, status) => status,
            };
            assert_eq!(row.status, ended, "request {i}: {row:?}");
        }
    }

    // Per vendor, by category: every call the vendor reported, exactly; the others within the bound.
    let mut report = Vec::new();
    for (name, sim) in vendors.each() {
        let bill = sim.stats().bill();
        let (vendor, reported) = calls(&rows, name, UsageSource::Vendor);
        let (estimated, guessed) = calls(&rows, name, UsageSource::Estimated);
        report.push(format!(
            "{name}: {reported} reported + {guessed} estimated calls, bill {bill:?}"
        ));
        match name {
            "steady" | "storm" | "flaky" => {
                assert_eq!(guessed, 0, "{name}: every call answered whole");
                assert_eq!(
                    vendor, bill,
                    "{name}: the ledger is the vendor's bill, category by category"
                );
            }
            _ => {
                assert_eq!(reported, 0, "{name}: no call answered whole");
                assert!(guessed > 0, "{name}");
                // The gateway's own counts against the vendor's (README, "Metering"): the prompt as the
                // gateway counted it, the output from the text that passed through. They differ by the
                // tokenizers' disagreement (the simulator counts 4 characters a token and a word a token)
                // and, for output, the tokens in transit when the stream stopped.
                let within = |ours: u64, theirs: u64, slack: u64| ours.abs_diff(theirs) <= theirs / 4 + slack;
                assert!(
                    within(estimated.prompt_tokens(), bill.prompt_tokens(), 0),
                    "{name}: estimated input {} against a bill of {}",
                    estimated.prompt_tokens(),
                    bill.prompt_tokens()
                );
                assert_eq!(bill.cache_read + bill.cache_write(), 0, "{name}: short prompts");
                assert!(
                    within(estimated.output, bill.output, IN_TRANSIT_TOKENS * guessed as u64),
                    "{name}: estimated output {} against a bill of {} over {guessed} calls",
                    estimated.output,
                    bill.output
                );
                report.push(format!("  estimated {estimated:?}"));
            }
        }
    }
    let total_bill = vendors
        .each()
        .iter()
        .fold(TokenUsage::default(), |sum, (_, sim)| sum.plus(&sim.stats().bill()));
    assert!(total_bill.cache_read > 0 && total_bill.reasoning > 0, "{total_bill:?}");
    assert!(vendors.storm.stats().rate_limited > 0, "a 429 storm");
    assert!(vendors.flaky.stats().server_errors > 0, "500s");

    // Each tenant's enforced spend is its rows' sum, after the restart (seeded from the ledger) too.
    let base = second.server.url();
    for tenant in ["acme", "globex", "initech"] {
        let ledger: i64 = rows
            .iter()
            .filter(|r| &*r.tenant == tenant)
            .map(|r| r.cost_micros.unwrap())
            .sum();
        let (status, body) = admin(&base, reqwest::Method::GET, &format!("/admin/tenants/{tenant}"), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["budget"]["spent_micros"].as_i64(),
            Some(ledger),
            "{tenant}: {body}"
        );
        report.push(format!("{tenant}: {ledger} micro-dollars"));
    }
    for group_by in [GroupBy::Tenant, GroupBy::Model, GroupBy::Day, GroupBy::Key] {
        let filter = SpendFilter {
            tenant: None,
            from: None,
            to: None,
            group_by,
        };
        let ledger = second.store().spend_from_ledger(&filter).await.unwrap();
        assert_eq!(
            second.store().spend(&filter).await.unwrap(),
            ledger,
            "rollups by {group_by:?}"
        );
    }

    let estimated_rows = rows.iter().filter(|r| r.usage_source == UsageSource::Estimated).count();
    eprintln!(
        "{label}: {TOTAL} requests, {answered} answered, {} rows ({estimated_rows} estimated), stop at {stopping:?} with {streams_open} streams open, {} 429s in the storm, \
         done in {:?}\n  first writer {first_stats:?}\n  second writer {stats:?}\n  {}",
        rows.len(),
        vendors.storm.stats().rate_limited,
        started.elapsed(),
        report.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_reconciles_with_the_vendors_bills_on_sqlite() {
    let dir = scratch_dir("reconcile-sqlite-db");
    reconcile(Database::sqlite(&dir), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_reconciles_with_the_vendors_bills_on_postgres() {
    let Some(database) = Database::postgres("sluice_reconcile").await else {
        return;
    };
    reconcile(database, "postgres").await;
}
