//! The harness the shared store suite runs on: a SQLite file in a temporary folder, or a fresh Postgres
//! database created through the `postgres` maintenance database and dropped at the end (even when the
//! test panics), and a way to make either unreachable and reachable again.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_store::{Store, StoreOptions, WriterStats};
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
