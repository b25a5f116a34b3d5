//! The harness the shared store suite runs on: a SQLite file in a temporary folder, or a fresh Postgres
//! database created through the `postgres` maintenance database and dropped at the end (even when the
//! test panics), and a way to make either unreachable and reachable again; the rows the cases write.
#![allow(dead_code, reason = "shared by several test files, each using a part")]

/// Runs every case of the file's `cases` module once per backend: `sqlite::case` and `postgres::case`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let harness = crate::support::Harness::sqlite(stringify!($case)).await;
                    crate::cases::$case(&harness).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = crate::support::Harness::postgres(stringify!($case)).await else {
                        return;
                    };
                    crate::cases::$case(&harness).await;
                }
            )*
        }
    };
}

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use sluice_store::{
    AttemptOutcome, AttemptUsage, GroupBy, PriceSource, SpendFilter, SpendRow, Store, StoreOptions, TokenUsage,
    UsageRow, UsageSource, WriterStats,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Maintenance URLs tried in order; `SLUICE_TEST_POSTGRES_URL` replaces them.
const PG_CANDIDATES: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432/postgres",
    "postgres://root@127.0.0.1:5432/postgres",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub kind: Kind,
    /// The database's own URL.
    pub url: String,
    /// A folder for the spool and (SQLite) the database file, removed at the end.
    pub dir: PathBuf,
    pg: Option<PgDatabase>,
}

/// A throwaway Postgres database, dropped with the harness.
struct PgDatabase {
    admin_url: String,
    name: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{name}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("sluice-store-tests").join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Harness {
    pub async fn sqlite(test: &str) -> Self {
        let dir = temp_dir(test);
        // A nested folder that does not exist yet: opening must create it.
        let url = format!("sqlite://{}/db/store.db", dir.display());
        Self {
            kind: Kind::Sqlite,
            url,
            dir,
            pg: None,
        }
    }

    /// `None` (after saying so) when Postgres is unreachable and `SLUICE_SKIP_POSTGRES_TESTS=1`; panics
    /// with instructions when it is unreachable otherwise.
    pub async fn postgres(test: &str) -> Option<Self> {
        let candidates: Vec<String> = match std::env::var("SLUICE_TEST_POSTGRES_URL") {
            Ok(url) => vec![url],
            Err(_) => PG_CANDIDATES.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut errors = Vec::new();
        let mut admin = None;
        for url in &candidates {
            match PgConnection::connect(url).await {
                Ok(conn) => {
                    admin = Some((url.clone(), conn));
                    break;
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        let Some((admin_url, mut conn)) = admin else {
            if std::env::var("SLUICE_SKIP_POSTGRES_TESTS").as_deref() == Ok("1") {
                eprintln!("SKIPPED {test} on Postgres: not reachable and SLUICE_SKIP_POSTGRES_TESTS=1");
                return None;
            }
            panic!(
                "Postgres is not reachable for the store tests ({}).\n\
                 Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start), point \
                 SLUICE_TEST_POSTGRES_URL at a maintenance database with trust auth, or set \
                 SLUICE_SKIP_POSTGRES_TESTS=1 to skip the Postgres half.",
                errors.join("; ")
            );
        };
        let name = format!("sluice_test_{}", unique(test)).to_lowercase();
        // An identifier generated here, not a value: DDL cannot bind it.
        let create = format!("CREATE DATABASE \"{name}\"");
        let mut attempt = 0;
        loop {
            match conn.execute(create.as_str()).await {
                Ok(_) => break,
                // Concurrent CREATE DATABASE from parallel tests can collide on the template.
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("retrying CREATE DATABASE {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => panic!("cannot create the test database {name}: {e}"),
            }
        }
        let _ = conn.close().await;
        let options = PgConnectOptions::from_str(&admin_url).unwrap();
        let user = options.get_username().to_owned();
        let url = format!("postgres://{user}@{}:{}/{name}", options.get_host(), options.get_port());
        Some(Self {
            kind: Kind::Postgres,
            url,
            dir: temp_dir(test),
            pg: Some(PgDatabase { admin_url, name }),
        })
    }

    /// A migrated store on the database.
    pub async fn store(&self) -> Store {
        let store = Store::open(&self.url).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    pub fn spool_path(&self) -> PathBuf {
        self.dir.join("spool").join("usage.spool")
    }

    /// A switch that makes the database unreachable for stores opened on [`Outage::url`].
    pub async fn outage(&self) -> Outage {
        match self.kind {
            Kind::Postgres => {
                let options = PgConnectOptions::from_str(&self.url).unwrap();
                let target = format!("{}:{}", options.get_host(), options.get_port());
                let proxy = Proxy::start(target).await;
                let url = format!(
                    "postgres://{}@{}/{}",
                    options.get_username(),
                    proxy.addr,
                    options.get_database().unwrap_or_default()
                );
                Outage {
                    url,
                    how: How::Proxy(proxy),
                }
            }
            Kind::Sqlite => Outage {
                url: self.url.clone(),
                how: How::Lock {
                    url: self.url.clone(),
                    holder: None,
                },
            },
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(db) = self.pg.take() {
            // Runs even when the test panicked; its own thread and runtime, since Drop cannot await.
            let done = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut conn = PgConnection::connect(&db.admin_url).await?;
                    let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name);
                    conn.execute(drop.as_str()).await?;
                    conn.close().await
                })
            })
            .join();
            if !matches!(done, Ok(Ok(()))) {
                eprintln!("could not drop a test database: {done:?}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// === Outages ===

pub struct Outage {
    /// The URL to open the store that should suffer the outage with.
    pub url: String,
    how: How,
}

enum How {
    /// Postgres behind a TCP proxy that can drop every connection and refuse new ones.
    Proxy(Proxy),
    /// SQLite with a second connection holding the write lock (root ignores file permissions, so an
    /// unwritable file would not do); writers then fail with SQLITE_BUSY after their busy timeout.
    Lock {
        url: String,
        holder: Option<SqliteConnection>,
    },
}

impl Outage {
    /// Options for the store behind the switch: fail fast.
    pub fn options() -> StoreOptions {
        StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_millis(300),
            lazy: false,
        }
    }

    pub async fn cut(&mut self) {
        match &mut self.how {
            How::Proxy(proxy) => proxy.cut(),
            How::Lock { url, holder } => {
                let mut conn = SqliteConnection::connect(url).await.unwrap();
                conn.execute("BEGIN EXCLUSIVE").await.unwrap();
                *holder = Some(conn);
            }
        }
    }

    pub async fn restore(&mut self) {
        match &mut self.how {
            How::Proxy(proxy) => proxy.restore(),
            How::Lock { holder, .. } => {
                if let Some(mut conn) = holder.take() {
                    conn.execute("COMMIT").await.unwrap();
                    conn.close().await.unwrap();
                }
            }
        }
    }
}

pub struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    kill: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (kill, _) = watch::channel(0u64);
        let accept = {
            let up = up.clone();
            let kill = kill.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        // Accepted and closed at once: the database is "down".
                        drop(client);
                        continue;
                    }
                    let target = target.clone();
                    let mut killed = kill.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = killed.changed() => {}
                        }
                    });
                }
            })
        };
        Self { addr, up, kill, accept }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.kill.send_modify(|generation| *generation += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill.send_modify(|generation| *generation += 1);
        self.accept.abort();
    }
}

/// Waits until `done` holds, failing with `what` and the writer's counters after `limit`.
pub async fn eventually(
    what: &str,
    limit: Duration,
    mut stats: impl FnMut() -> WriterStats,
    done: impl Fn(&WriterStats) -> bool,
) {
    let start = tokio::time::Instant::now();
    loop {
        let now = stats();
        if done(&now) {
            return;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}; writer stats: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === Rows ===

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Usage of `prompt` input tokens split over every input category, and `completion` output tokens (a third
/// of them reasoning).
pub fn usage(prompt: u64, completion: u64) -> TokenUsage {
    let (cache_read, cache_write_5m, cache_write_1h) = (prompt / 4, prompt / 10, prompt / 20);
    TokenUsage {
        input: prompt - cache_read - cache_write_5m - cache_write_1h,
        cache_read,
        cache_write_5m,
        cache_write_1h,
        output: completion,
        reasoning: completion / 3,
    }
}

/// A row as the gateway records it: its id, the client's request id `client-{id}`, one answered attempt.
#[expect(clippy::too_many_arguments, reason = "a test row factory")]
pub fn row(
    id: &str,
    tenant: &str,
    key: Option<&str>,
    model: &str,
    when: &str,
    prompt: u64,
    completion: u64,
    cost: Option<i64>,
) -> UsageRow {
    let usage = usage(prompt, completion);
    UsageRow {
        id: id.to_owned(),
        client_request_id: Some(format!("client-{id}")),
        tenant: tenant.into(),
        key_id: key.map(Arc::from),
        model: model.to_owned(),
        provider: "openai".into(),
        vendor_model: format!("{model}-2024-08-06").into(),
        upstream_key: Some("openai#0".into()),
        usage,
        usage_source: UsageSource::Vendor,
        cost_micros: cost,
        price_source: if cost.is_some() {
            PriceSource::List
        } else {
            PriceSource::None
        },
        price_date: cost.map(|_| day("2026-01-15")),
        latency_ms: 120,
        status: 200,
        attempts: 1,
        attempt_log: vec![AttemptUsage {
            provider: "openai".into(),
            vendor_model: format!("{model}-2024-08-06").into(),
            upstream_key: Some("openai#0".into()),
            outcome: AttemptOutcome::Answered,
            usage,
            source: UsageSource::Vendor,
        }],
        prompt_name: None,
        prompt_version: None,
        created_at: at(when),
    }
}

/// The exact totals of `rows`, as one spend row.
pub fn totals(group: &str, rows: &[UsageRow]) -> SpendRow {
    let sum = |f: fn(&TokenUsage) -> u64| rows.iter().map(|r| f(&r.usage) as i64).sum();
    SpendRow {
        group: group.to_owned(),
        requests: rows.len() as i64,
        input_tokens: sum(|u| u.input),
        cache_read_tokens: sum(|u| u.cache_read),
        cache_write_5m_tokens: sum(|u| u.cache_write_5m),
        cache_write_1h_tokens: sum(|u| u.cache_write_1h),
        output_tokens: sum(|u| u.output),
        reasoning_tokens: sum(|u| u.reasoning),
        cost_micros: rows.iter().map(|r| r.cost_micros.unwrap_or(0)).sum(),
    }
}

/// Everything in the ledger summed, checked against the rollups on the way.
pub async fn ledger_total(store: &Store) -> SpendRow {
    assert_rollups_match_ledger(store).await;
    let by_tenant = store
        .spend_from_ledger(&SpendFilter::new(GroupBy::Tenant))
        .await
        .unwrap();
    let mut sum = SpendRow {
        group: "all".to_owned(),
        ..SpendRow::default()
    };
    for r in by_tenant {
        sum.requests += r.requests;
        sum.input_tokens += r.input_tokens;
        sum.cache_read_tokens += r.cache_read_tokens;
        sum.cache_write_5m_tokens += r.cache_write_5m_tokens;
        sum.cache_write_1h_tokens += r.cache_write_1h_tokens;
        sum.output_tokens += r.output_tokens;
        sum.reasoning_tokens += r.reasoning_tokens;
        sum.cost_micros += r.cost_micros;
    }
    sum
}

pub async fn assert_rollups_match_ledger(store: &Store) {
    for group_by in [GroupBy::Tenant, GroupBy::Model, GroupBy::Day, GroupBy::Key] {
        let filter = SpendFilter::new(group_by);
        let rollups = store.spend(&filter).await.unwrap();
        let ledger = store.spend_from_ledger(&filter).await.unwrap();
        assert_eq!(rollups, ledger, "rollups and ledger disagree grouped by {group_by:?}");
    }
}

/// Every ledger row, oldest first, through the export (pages of `page` rows).
pub async fn export_all(store: &Store, filter: sluice_store::ExportFilter, page: usize) -> Vec<UsageRow> {
    let mut export = store.export(filter).page_size(page);
    let mut rows = Vec::new();
    while let Some(batch) = export.next_page().await.unwrap() {
        assert!(batch.len() <= page, "a page of {} rows, asked for {page}", batch.len());
        rows.extend(batch);
    }
    rows
}
