//! The usage ledger: what recording costs the request path, and how many rows per second the writer
//! sustains into the database. Results: `docs/benchmarks.md`, section "Usage ledger".
//!
//! - `ledger/try_record/*`: wall time of one `UsageWriter::try_record`, called from a task on a Tokio
//!   worker (where request handlers call it), with a writer on a real Postgres database draining the
//!   queue meanwhile. `one_at_a_time`: the writer has taken the previous row and sleeps, so every call
//!   wakes it (a gateway under ordinary load); `burst_of_1000`: 1,000 calls back to back, starting from an
//!   empty queue (a burst). Rows are built before the clock starts; the queue never fills (no row is
//!   spooled), which the bench checks. `clock_overhead` is the same timing around nothing, to subtract
//!   from `one_at_a_time`.
//! - `ledger/sustained/{postgres,sqlite}`: 50,000 rows recorded as fast as possible, timed until
//!   `stats().written` says all are in the ledger; the throughput line is rows per second. The queue
//!   holds all 50,000 (so none is spooled); batches and flush interval are the defaults (500 rows,
//!   200 ms). The ledger grows by 50,000 rows a run.
//!
//! Postgres: a throwaway database on `postgres://postgres@127.0.0.1:5432` (`SLUICE_BENCH_POSTGRES_URL`
//! replaces the maintenance URL), dropped at the end; SQLite: a file in a temporary folder.
//!
//! `cargo bench -p sluice-store --bench ledger -- --warm-up-time 1 --measurement-time 3`
//!
//! Criterion sizes a benchmark from the wall time of its warm-up, untimed waits included, so a
//! `try_record` benchmark puts about as many rows in the database as it can take in the measurement time,
//! and the sustained ones run once a sample (ten samples after one warm-up run) unless the measurement
//! time is longer than ten runs.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

use std::hint::black_box;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{NaiveDate, Utc};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use sluice_store::{
    AttemptOutcome, AttemptUsage, PriceSource, Store, TokenUsage, UsageRow, UsageSource, UsageWriter, WriterConfig,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tokio::runtime::Runtime;

/// The maintenance database the throwaway one is created from.
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Rows per sustained run.
const SUSTAINED_ROWS: u64 = 50_000;

/// Calls per timed burst.
const BURST: usize = 1_000;

/// Rows are numbered across the whole run to spread them; ids are UUIDv7s, so no row is a duplicate.
static NEXT_ROW: AtomicU64 = AtomicU64::new(0);

/// A row as the gateway records it: a UUIDv7 id, the client's request id (a random UUID, as
/// `MakeRequestUuid` makes), spread over 10 tenants, 20 keys and 4 models, usage by category from one
/// answered attempt, list-priced, stamped now.
fn usage_row() -> UsageRow {
    const MODELS: [(&str, &str); 4] = [
        ("gpt-4o", "gpt-4o-2024-08-06"),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("claude-sonnet", "claude-sonnet-4-20250514"),
        ("gemini-flash", "gemini-2.5-flash"),
    ];
    let n = NEXT_ROW.fetch_add(1, Ordering::Relaxed);
    let (model, vendor_model) = MODELS[(n % 4) as usize];
    let prompt = 200 + n % 1_800;
    let completion = 20 + n % 480;
    let usage = TokenUsage {
        input: prompt - prompt / 4,
        cache_read: prompt / 4,
        output: completion,
        ..TokenUsage::default()
    };
    let source = if n.is_multiple_of(50) {
        UsageSource::Estimated
    } else {
        UsageSource::Vendor
    };
    let upstream_key: Option<Arc<str>> = Some(format!("openai#{}", n % 3).into());
    UsageRow {
        id: UsageRow::new_id(),
        client_request_id: Some(uuid::Uuid::new_v4().to_string()),
        tenant: format!("tenant-{}", n % 10).into(),
        key_id: (!n.is_multiple_of(7)).then(|| format!("key-{:02}", n % 20).into()),
        model: model.to_owned(),
        provider: "openai".into(),
        vendor_model: vendor_model.into(),
        upstream_key: upstream_key.clone(),
        usage,
        usage_source: source,
        cost_micros: Some((prompt * 2 + completion * 8) as i64),
        price_source: PriceSource::List,
        price_date: NaiveDate::from_ymd_opt(2026, 12, 1),
        latency_ms: 300 + n % 2_000,
        status: 200,
        attempts: 1,
        attempt_log: vec![AttemptUsage {
            provider: "openai".into(),
            vendor_model: vendor_model.into(),
            upstream_key,
            outcome: AttemptOutcome::Answered,
            usage,
            source,
        }],
        prompt_name: None,
        prompt_version: None,
        created_at: Utc::now(),
    }
}

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// A folder for spools and the SQLite file, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join("sluice-store-bench").join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway Postgres database, dropped (connections and all) on drop, even after a panic.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("SLUICE_BENCH_POSTGRES_URL").unwrap_or_else(|_| PG_ADMIN_URL.to_owned());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .map_err(|e| format!("Postgres is not reachable at {admin_url}: {e}"))
            .unwrap();
        let name = unique("sluice_bench").to_lowercase();
        // An identifier generated here, not a value: DDL cannot bind it.
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        conn.close().await.unwrap();
        let options = PgConnectOptions::from_str(&admin_url).unwrap();
        let url = format!(
            "postgres://{}@{}:{}/{name}",
            options.get_username(),
            options.get_host(),
            options.get_port()
        );
        Self { admin_url, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Its own thread and runtime: Drop cannot await, and may run inside the bench's runtime.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop the bench database {}: {done:?}", self.name);
        }
    }
}

/// Rows in the ledger, counted by the database itself.
async fn ledger_rows(url: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM usage_ledger";
    if url.starts_with("sqlite:") {
        let mut conn = SqliteConnection::connect(url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        n
    } else {
        let mut conn = PgConnection::connect(url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        n
    }
}

/// Opens and migrates the store at `url` and starts a writer on it.
async fn start_writer(url: &str, config: WriterConfig) -> (Store, Arc<UsageWriter>) {
    let store = Store::open(url).await.unwrap();
    store.migrate().await.unwrap();
    let writer = UsageWriter::start(store.clone(), config).unwrap();
    (store, Arc::new(writer))
}

/// Stops the writer, checks that every recorded row reached the ledger once and nothing was spooled,
/// and closes the store.
async fn finish(store: Store, writer: Arc<UsageWriter>, url: &str, label: &str) {
    let stats = writer.shutdown(Duration::from_secs(30)).await;
    store.close().await;
    let rows = ledger_rows(url).await;
    eprintln!("{label}: {stats:?}, {rows} rows in the ledger");
    assert_eq!(
        (stats.spooled, stats.duplicates, stats.write_errors, stats.dropped),
        (0, 0, 0, 0),
        "{label}: rows went astray"
    );
    assert_eq!(
        stats.written, rows as u64,
        "{label}: the ledger does not hold what the writer wrote"
    );
}

/// Waits (without holding the worker) until the writer has taken everything queued.
async fn until_drained(writer: &UsageWriter) {
    let mut spins = 0;
    while writer.queue_depth() > 0 {
        // A row is usually taken within microseconds; a batch being written takes milliseconds.
        if spins < 200 {
            spins += 1;
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// How one timed sample runs, on a Tokio worker.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Each call timed alone, after the writer has taken the previous row.
    OneAtATime,
    /// Bursts of `BURST` calls timed together, each from an empty queue.
    Burst,
    /// The one-at-a-time timing around nothing.
    Clock,
}

fn time_calls(rt: &Runtime, writer: &Arc<UsageWriter>, mode: Mode, iters: u64) -> Duration {
    let writer = writer.clone();
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BURST as u64);
                left -= n;
                match mode {
                    Mode::Clock => {
                        for _ in 0..n {
                            let start = Instant::now();
                            total += black_box(start).elapsed();
                        }
                    }
                    Mode::OneAtATime => {
                        let mut rows: Vec<UsageRow> = (0..n).map(|_| usage_row()).collect();
                        for row in rows.drain(..) {
                            until_drained(&writer).await;
                            let start = Instant::now();
                            let recorded = writer.try_record(row);
                            total += start.elapsed();
                            assert!(recorded.is_ok(), "the queue was full");
                        }
                    }
                    Mode::Burst => {
                        let rows: Vec<UsageRow> = (0..n).map(|_| usage_row()).collect();
                        until_drained(&writer).await;
                        let start = Instant::now();
                        let mut full = 0u32;
                        for row in rows {
                            full += u32::from(writer.try_record(row).is_err());
                        }
                        total += start.elapsed();
                        assert_eq!(full, 0, "the queue was full");
                    }
                }
            }
            total
        })
        .await
        .unwrap()
    })
}

/// `UsageWriter::try_record` per call, with a Postgres writer draining the queue.
fn try_record(c: &mut Criterion, rt: &Runtime) {
    let pg = rt.block_on(PgDatabase::create());
    let dir = TempDir::new("try_record");
    let config = WriterConfig::new(dir.0.join("usage.spool"));
    let (store, writer) = rt.block_on(start_writer(&pg.url, config));

    let mut group = c.benchmark_group("ledger/try_record");
    group.bench_function("clock_overhead", |b| {
        b.iter_custom(|iters| time_calls(rt, &writer, Mode::Clock, iters))
    });
    group.bench_function("one_at_a_time", |b| {
        b.iter_custom(|iters| time_calls(rt, &writer, Mode::OneAtATime, iters))
    });
    group.bench_function("burst_of_1000", |b| {
        b.iter_custom(|iters| time_calls(rt, &writer, Mode::Burst, iters))
    });
    group.finish();
    rt.block_on(finish(store, writer, &pg.url, "try_record (postgres)"));
}

/// `iters` runs, one after the other, of `SUSTAINED_ROWS` rows recorded as fast as possible; the time
/// of each runs until the writer reports all its rows written.
fn sustained_runs(rt: &Runtime, writer: &UsageWriter, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let rows: Vec<UsageRow> = (0..SUSTAINED_ROWS).map(|_| usage_row()).collect();
        let target = writer.stats().written + SUSTAINED_ROWS;
        total += rt.block_on(async {
            let start = Instant::now();
            for row in rows {
                assert!(writer.try_record(row).is_ok(), "the queue was full");
            }
            while writer.stats().written < target {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            start.elapsed()
        });
    }
    total
}

fn sustained_backend(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, name: &str, url: &str, spool: PathBuf) {
    let config = WriterConfig {
        queue_capacity: SUSTAINED_ROWS as usize,
        ..WriterConfig::new(spool)
    };
    let (store, writer) = rt.block_on(start_writer(url, config));
    group.bench_function(name, |b| b.iter_custom(|iters| sustained_runs(rt, &writer, iters)));
    rt.block_on(finish(store, writer, url, &format!("sustained ({name})")));
}

/// Sustained rows per second through the writer into Postgres and SQLite, each on a fresh database.
fn sustained(c: &mut Criterion, rt: &Runtime) {
    let pg = rt.block_on(PgDatabase::create());
    let dir = TempDir::new("sustained");
    let mut group = c.benchmark_group("ledger/sustained");
    // A run takes seconds: one run per sample (criterion warns that ten do not fit in the measurement
    // time: expected).
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(SUSTAINED_ROWS));
    sustained_backend(&mut group, rt, "postgres", &pg.url, dir.0.join("pg.spool"));
    let sqlite_url = format!("sqlite://{}/ledger.db", dir.0.display());
    sustained_backend(&mut group, rt, "sqlite", &sqlite_url, dir.0.join("sqlite.spool"));
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    try_record(c, &rt);
    sustained(c, &rt);
}

criterion_group!(benches, bench);
criterion_main!(benches);
