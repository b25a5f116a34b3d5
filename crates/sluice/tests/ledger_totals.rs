//! The usage ledger against what the upstream reported: every request served is one ledger row, and the
//! ledger's token totals equal the simulated vendor's, exactly, under a concurrent load and across a
//! database outage, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sluice_simulate::SimConfig;
use sluice_store::{GroupBy, SpendFilter, SpendRow, WriterStats};

const ADMIN: &str = "sk-ledger-admin-0123456789abcdefghijklmn";

/// Micro-dollars per prompt and per completion token of the deployment (2 and 8 USD per million).
const INPUT_MICROS: u64 = 2;
const OUTPUT_MICROS: u64 = 8;

/// A fresh folder for one test's database and spool.
fn scratch(name: &str) -> std::path::PathBuf {
    scratch_dir(&format!("ledger-{name}"))
}

fn config(upstream: &str, database: &Database, spool_dir: &str) -> String {
    format!(
        r#"
[store]
url = "{url}"
spool = "{spool}"
prices = "{prices}"
refresh_ms = 200
[auth]
admin_key = "{ADMIN}"
[[providers]]
name = "sim"
kind = "openai_compatible"
base_url = "{upstream}"
keys = ["k"]
[[models]]
name = "m"
[[models.deployments]]
provider = "sim"
model = "vendor-m"
price = {{ input = 2.0, output = 8.0 }}
"#,
        url = database.url(),
        spool = scratch(spool_dir).join("usage.spool").display(),
        prices = repo_root().join("config/prices.toml").display(),
    )
}

async fn admin(gateway: &GatewayServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, gateway.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates the tenants and one virtual key per entry of `owners`, in order: `(key, key id)`.
async fn keys_for(gateway: &GatewayServer, owners: &[&str]) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for (i, tenant) in owners.iter().enumerate() {
        if !owners[..i].contains(tenant) {
            let (status, body) = admin(
                gateway,
                reqwest::Method::POST,
                "/admin/tenants",
                Some(json!({"name": tenant})),
            )
            .await;
            assert_eq!(status, 201, "{body}");
        }
        let (status, key) = admin(
            gateway,
            reqwest::Method::POST,
            &format!("/admin/tenants/{tenant}/keys"),
            Some(json!({"name": format!("key-{i}")})),
        )
        .await;
        assert_eq!(status, 201, "{key}");
        keys.push((
            key["key"].as_str().unwrap().to_owned(),
            key["id"].as_str().unwrap().to_owned(),
        ));
    }
    keys
}

/// What the client saw of one answered request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    requests: u64,
    prompt: u64,
    completion: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.requests += other.requests;
        self.prompt += other.prompt;
        self.completion += other.completion;
    }

    fn of(row: &SpendRow) -> Self {
        Self {
            requests: row.requests as u64,
            prompt: row.prompt_tokens() as u64,
            completion: row.completion_tokens() as u64,
        }
    }
}

/// Request `i`: two in three stream, prompts and completion caps vary, so that a lost or doubled row
/// changes the totals. Asserts a 200 and returns the usage the client was told.
async fn request(client: &reqwest::Client, gateway: &str, key: &str, i: usize) -> Totals {
    let stream = !i.is_multiple_of(3);
    let mut body = json!({
        "model": "m",
        "stream": stream,
        "max_tokens": 3 + i % 11,
        "messages": [{"role": "user", "content": format!("Request {i} about rivers{}", " and lakes".repeat(i % 7))}],
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let response = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "request {i}: {text}");
    let usage = if stream {
        assert!(text.ends_with("data: [DONE]\n\n"), "request {i} ended early: {text}");
        sse_data(&text)
            .iter()
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str::<Value>(data).unwrap())
            .find(|chunk| chunk["usage"].is_object())
            .unwrap_or_else(|| panic!("request {i}: no usage chunk in {text}"))["usage"]
            .clone()
    } else {
        serde_json::from_str::<Value>(&text).unwrap()["usage"].clone()
    };
    Totals {
        requests: 1,
        prompt: usage["prompt_tokens"].as_u64().unwrap(),
        completion: usage["completion_tokens"].as_u64().unwrap(),
    }
}

/// Waits (at most `limit`) until the writer has put `rows` rows in the ledger and holds nothing in its
/// queue or spool; returns its counters then.
async fn drained(gateway: &GatewayServer, rows: u64, limit: Duration) -> WriterStats {
    let done = eventually(limit, || {
        let s = gateway.writer_stats();
        s.database_up && s.written + s.duplicates >= rows && s.queue_depth == 0 && s.spool_pending == 0
    })
    .await;
    let stats = gateway.writer_stats();
    assert!(
        done,
        "the usage writer did not drain {rows} rows within {limit:?}: {stats:?}"
    );
    stats
}

/// Waits (at most `limit`) until the writer has failed `failures` writes (retries included) and spooled
/// rows since `spooled`.
async fn noticed_outage(gateway: &GatewayServer, spooled: u64, failures: u64, limit: Duration) {
    let noticed = eventually(limit, || {
        let s = gateway.writer_stats();
        !s.database_up && s.spooled > spooled && s.write_errors >= failures
    })
    .await;
    assert!(
        noticed,
        "the usage writer never noticed the outage: {:?}",
        gateway.writer_stats()
    );
}

/// The writer's counters after an outage it went through: every row written once, some of them by
/// replaying the spool, nothing lost or refused.
fn assert_outage_stats(stats: &WriterStats, rows: u64) {
    // Every row has its own gateway-made id, so a duplicate is a batch the database committed while the
    // connection was being cut: the writer saw an error, spooled it, and its replay found it there.
    assert_eq!(stats.written + stats.duplicates, rows, "rows written: {stats:?}");
    assert!(stats.write_errors > 0, "the outage failed writes: {stats:?}");
    assert!(
        stats.spooled > 0 && stats.replayed > 0,
        "rows went through the spool: {stats:?}"
    );
    assert!(stats.replayed <= stats.spooled, "{stats:?}");
    assert_eq!(
        (stats.dropped, stats.rejected),
        (0, 0),
        "nothing lost or refused: {stats:?}"
    );
}

/// The ledger (summed from its rows) and the per-day rollups agree for every grouping, and
/// `GET /admin/spend` answers the rollups. Returns the ledger's rows grouped by `group_by`.
async fn ledger_by(gateway: &GatewayServer, group_by: GroupBy, query: &str) -> Vec<SpendRow> {
    let filter = SpendFilter {
        tenant: None,
        from: None,
        to: None,
        group_by,
    };
    let ledger = gateway.store().spend_from_ledger(&filter).await.unwrap();
    let rollups = gateway.store().spend(&filter).await.unwrap();
    assert_eq!(rollups, ledger, "rollups by {query} agree with the ledger");
    let (status, body) = admin(
        gateway,
        reqwest::Method::GET,
        &format!("/admin/spend?group_by={query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        serde_json::to_value(&rollups).unwrap(),
        "GET /admin/spend?group_by={query}"
    );
    ledger
}

/// Everything the ledger must agree with: the client's view per key, and the simulated vendor's
/// counters.
async fn assert_ledger_matches(
    gateway: &GatewayServer,
    upstream: &SimServer,
    keys: &[(String, String)],
    seen: &[Totals],
) {
    let mut client_total = Totals::default();
    for totals in seen {
        client_total.add(*totals);
    }
    let sim = upstream.stats();
    let (sim_prompt, sim_completion) = sim_token_totals(&sim);
    assert_eq!(
        sim.requests, client_total.requests,
        "the upstream served each request once: {sim:?}"
    );
    assert_eq!(
        (sim_prompt, sim_completion),
        (client_total.prompt, client_total.completion),
        "the client was told what the upstream reported"
    );

    let by_tenant = ledger_by(gateway, GroupBy::Tenant, "tenant").await;
    let mut ledger_total = Totals::default();
    let mut cost = 0;
    for row in &by_tenant {
        ledger_total.add(Totals::of(row));
        cost += row.cost_micros;
    }
    assert_eq!(
        ledger_total,
        Totals {
            requests: sim.requests,
            prompt: sim_prompt,
            completion: sim_completion,
        },
        "ledger rows and token totals equal the upstream's: {by_tenant:?}"
    );
    assert_eq!(
        cost as u64,
        sim_prompt * INPUT_MICROS + sim_completion * OUTPUT_MICROS,
        "the cost is the price of what the upstream reported"
    );

    // Per key: exactly the requests made with it and the usage they were answered with.
    let by_key: BTreeMap<String, Totals> = ledger_by(gateway, GroupBy::Key, "key")
        .await
        .iter()
        .map(|row| (row.group.clone(), Totals::of(row)))
        .collect();
    let expected: BTreeMap<String, Totals> = keys
        .iter()
        .zip(seen)
        .map(|((_, id), totals)| (id.clone(), *totals))
        .collect();
    assert_eq!(by_key, expected, "the ledger per key");

    let by_day = ledger_by(gateway, GroupBy::Day, "day").await;
    assert_eq!(
        by_day.iter().map(|r| r.requests as u64).sum::<u64>(),
        sim.requests,
        "{by_day:?}"
    );
    let by_model = ledger_by(gateway, GroupBy::Model, "model").await;
    assert_eq!(by_model.len(), 1, "{by_model:?}");
    assert_eq!(Totals::of(&by_model[0]), ledger_total);
}

/// A sustained concurrent load with the database cut for part of it: `TOTAL` requests from `WORKERS`
/// workers over three keys of two tenants. The first `CUT` requests are served with the database up;
/// then it is cut, `CUT..NOTICED` are sent at once, `NOTICED..RESTORE` once the writer has noticed the
/// outage, and the database comes back, once the writer has failed `failures` writes (its retries and
/// replays meeting the outage too), while `RESTORE..TOTAL` are being served.
async fn totals_under_load_across_an_outage(mut database: Database, failures: u64) {
    const TOTAL: usize = 400;
    const WORKERS: usize = 16;
    const CUT: usize = 100;
    const NOTICED: usize = 200;
    const RESTORE: usize = 300;
    let started = Instant::now();

    let upstream = SimServer::start(SimConfig::default()).await;
    let label = match &database {
        Database::Sqlite { .. } => "load-sqlite",
        Database::Postgres { .. } => "load-postgres",
    };
    let gateway = GatewayServer::start(&config(&upstream.base_url(), &database, &format!("{label}-spool"))).await;
    let keys = Arc::new(keys_for(&gateway, &["acme", "acme", "globex"]).await);

    let next = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let (allow, allowed) = tokio::sync::watch::channel(CUT);
    let base = gateway.server.url();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (next, completed, keys, base) = (next.clone(), completed.clone(), keys.clone(), base.clone());
            let mut allowed = allowed.clone();
            let client = client();
            tokio::spawn(async move {
                let mut seen = vec![Totals::default(); keys.len()];
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= TOTAL {
                        return seen;
                    }
                    allowed.wait_for(|limit| i < *limit).await.unwrap();
                    let key = i % keys.len();
                    seen[key].add(request(&client, &base, &keys[key].0, i).await);
                    completed.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let reached = |count: usize| {
        let completed = completed.clone();
        async move {
            assert!(
                eventually(Duration::from_secs(30), || completed.load(Ordering::SeqCst) >= count).await,
                "only {} of {count} requests were served",
                completed.load(Ordering::SeqCst)
            );
        }
    };

    reached(CUT).await;
    let spooled = gateway.writer_stats().spooled;
    database.cut().await;
    allow.send_replace(NOTICED);
    noticed_outage(&gateway, spooled, 1, Duration::from_secs(20)).await;
    let outage_noticed = started.elapsed();
    allow.send_replace(RESTORE);
    noticed_outage(&gateway, spooled, failures, Duration::from_secs(20)).await;
    // Some of the outage's requests are still in flight when the database comes back.
    reached(RESTORE - WORKERS / 2).await;
    database.restore().await;
    allow.send_replace(TOTAL);

    let mut seen = vec![Totals::default(); keys.len()];
    for worker in workers {
        for (total, worker_seen) in seen.iter_mut().zip(worker.await.unwrap()) {
            total.add(worker_seen);
        }
    }
    let stats = drained(&gateway, TOTAL as u64, Duration::from_secs(20)).await;
    assert_outage_stats(&stats, TOTAL as u64);
    assert_ledger_matches(&gateway, &upstream, &keys, &seen).await;
    eprintln!(
        "{label}: {TOTAL} requests, outage noticed after {outage_noticed:?}, done in {:?}; {stats:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_totals_equal_the_upstreams_under_load_across_an_outage_on_sqlite() {
    // Each failed write waits out SQLite's busy timeout (5 s): one is enough here.
    totals_under_load_across_an_outage(Database::sqlite(&scratch("load-sqlite")), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_totals_equal_the_upstreams_under_load_across_an_outage_on_postgres() {
    let Some(database) = Database::postgres("sluice_ledger_load").await else {
        return;
    };
    // Failures are immediate: the outage lasts until a retry and a replay have failed too.
    totals_under_load_across_an_outage(database, 3).await;
}

/// The SQLite counterpart of the PostgreSQL outage test in `tenants.rs`: another process holds a write
/// transaction on the database file, the gateway's writes fail with SQLITE_BUSY after their busy
/// timeout, and the requests served meanwhile (streamed and not) reach the ledger exactly once when the
/// lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_outage_loses_no_usage_and_counts_none_twice() {
    const N: usize = 20;
    let started = Instant::now();
    let mut database = Database::sqlite(&scratch("outage-sqlite"));
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config(&upstream.base_url(), &database, "outage-sqlite-spool")).await;
    let keys = keys_for(&gateway, &["steady"]).await;
    let client = client();
    let base = gateway.server.url();

    // One request before the outage, so the ledger has something to keep.
    let mut seen = request(&client, &base, &keys[0].0, 0).await;
    drained(&gateway, 1, Duration::from_secs(10)).await;

    database.cut().await;
    for i in 1..=N / 2 {
        seen.add(request(&client, &base, &keys[0].0, i).await);
    }
    // The first half waits in the queue while the writer waits on the lock; the second half arrives
    // once the writer has given up and is spooling.
    noticed_outage(&gateway, 0, 1, Duration::from_secs(20)).await;
    for i in N / 2 + 1..=N {
        seen.add(request(&client, &base, &keys[0].0, i).await);
    }
    // Reads still work during the outage: the spend endpoint answers, without the outage's rows.
    let (status, body) = admin(&gateway, reqwest::Method::GET, "/admin/spend?group_by=tenant", None).await;
    assert_eq!((status, body["data"][0]["requests"].as_u64()), (200, Some(1)), "{body}");
    database.restore().await;

    let stats = drained(&gateway, N as u64 + 1, Duration::from_secs(20)).await;
    assert_outage_stats(&stats, N as u64 + 1);
    assert_ledger_matches(&gateway, &upstream, &keys, &[seen]).await;
    eprintln!("sqlite outage: done in {:?}; {stats:?}", started.elapsed());
}
