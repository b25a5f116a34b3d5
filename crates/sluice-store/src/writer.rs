//! `UsageWriter`: usage rows leave the request path through a bounded queue and reach the ledger in
//! batches, written by one task.
//!
//! # Policy when the database is down
//!
//! The gateway keeps serving and nothing is lost or counted twice:
//! - [`UsageWriter::try_record`] never waits for the database. When the queue is full (or the writer has
//!   shut down), the row is appended to the local spool file on the spot (one `write` under a mutex, no
//!   fsync) instead of being dropped, and the caller is told with [`Full`].
//! - The writer task batches rows (every `flush_interval` or `batch_size` rows) into one transaction.
//!   When a write fails because the database is unreachable, locked or out of resources, the batch is
//!   appended to the spool (with fsync) and the writer backs off exponentially with jitter
//!   (`retry_min`..`retry_max`); until the next retry, batches go straight to the spool.
//! - Each tick, if rows are waiting in the spool and no backoff is pending, the writer replays the spool
//!   (see [`crate::spool`]) in batches. Inserts ignore row ids already in the ledger, so a replay that is
//!   interrupted and started over, or a batch that was committed although its commit looked failed, is
//!   counted once.
//! - A spool line that cannot be read (torn by a crash, cut inside a multi-byte character, not a row) goes
//!   to the `.rejected` file with an error log line and a count ([`WriterStats::corrupt_lines`]); it never
//!   stops a start or a replay.
//! - A write the database refuses for its values (a constraint, an invalid byte sequence) is retried row
//!   by row; the rows refused again go to the `.rejected` file beside the spool, and everything else is
//!   written. An error of unknown kind is told apart by a ping: database reachable means the rows are at
//!   fault, unreachable means an outage.
//! - [`UsageWriter::shutdown`] drains the queue, writes what it can within three quarters of its grace
//!   (a write already under way when it is called is cut at that point too), spools the rest, and tries
//!   one replay if time remains; it returns within its grace. Spooled rows are replayed by the next start.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::{Failure, StoreError};
use crate::ledger::UsageRow;
use crate::model::InsertOutcome;
use crate::spool::Spool;
use crate::store::Store;

mod spooling;

/// How long the writer drains if its handle is dropped without `shutdown`.
const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// How the usage writer queues, batches, spools and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Where rows go while the database cannot take them (`data/usage.spool`).
    pub spool_path: PathBuf,
    /// Rows the queue holds before `try_record` spools instead.
    pub queue_capacity: usize,
    /// Rows per insert.
    pub batch_size: usize,
    /// Longest time a row waits in a partial batch.
    pub flush_interval: Duration,
    /// First retry delay after a failed write.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Longest wait for one database write (or ping) before it counts as an outage: a database behind a
    /// black-holed network would otherwise hold the writer for minutes.
    pub write_timeout: Duration,
}

impl WriterConfig {
    /// The default `batch_size`.
    pub const DEFAULT_BATCH_SIZE: usize = 500;
    /// The default `flush_interval`, in milliseconds.
    pub const DEFAULT_FLUSH_MS: u64 = 200;

    /// Defaults: 4,000 queued rows, batches of 500 or every 200 ms, retries from 500 ms to 30 s, 10 s per
    /// write.
    ///
    /// The queue holds eight batches: enough to ride out a slow write, small enough that a database
    /// slower than the traffic holds the process at a few MB of queued rows (about 1 KB of resident
    /// memory each) rather than ten. Rows beyond it go to the spool, which survives a crash as the
    /// queue does not, and spooling a quarter of the rows at 64 connections cost no CPU per request that
    /// could be told from noise.
    pub fn new(spool_path: impl Into<PathBuf>) -> Self {
        Self {
            spool_path: spool_path.into(),
            queue_capacity: 4_000,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            flush_interval: Duration::from_millis(Self::DEFAULT_FLUSH_MS),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// The queue was full (or the writer shut down): the row went to the spool instead, unless writing the
/// spool failed too, and then it was lost (and logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("usage queue full: {}", if *.spooled { "the row was spooled" } else { "the spool failed too, the row was lost" })]
pub struct Full {
    /// Whether the row reached the spool.
    pub spooled: bool,
}

/// A snapshot of the writer's counters, for metrics. Counts are since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Rows in the queue now.
    pub queue_depth: u64,
    /// Rows newly inserted into the ledger (replayed ones included).
    pub written: u64,
    /// Rows ignored because their id was already in the ledger.
    pub duplicates: u64,
    /// Rows appended to the spool.
    pub spooled: u64,
    /// Rows in the spool files now, waiting for a replay.
    pub spool_pending: u64,
    /// Rows newly inserted by replaying the spool.
    pub replayed: u64,
    /// Failed database writes (each failed batch or row counts once).
    pub write_errors: u64,
    /// Rows refused by the database for their values, or unreadable spool lines, moved to the
    /// `.rejected` file.
    pub rejected: u64,
    /// Of `rejected`: spool lines that could not be read as rows (torn, not UTF-8, not JSON).
    pub corrupt_lines: u64,
    /// Rows lost because the spool itself could not be written.
    pub dropped: u64,
    /// Whether the last write reached the database.
    pub database_up: bool,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    duplicates: AtomicU64,
    spooled: AtomicU64,
    spool_pending: AtomicU64,
    replayed: AtomicU64,
    write_errors: AtomicU64,
    rejected: AtomicU64,
    corrupt_lines: AtomicU64,
    dropped: AtomicU64,
}

struct Shared {
    spool: Spool,
    counters: Counters,
    up: AtomicBool,
    /// Set by `shutdown`, so that a long replay yields to the drain.
    stopping: AtomicBool,
    /// Told when the queue holds a whole batch.
    batch_ready: Notify,
}

/// The handle the request path records usage through. See the module docs for the policy.
pub struct UsageWriter {
    tx: mpsc::Sender<UsageRow>,
    /// The queue's free slots at which it holds a whole batch.
    batch_at: usize,
    shared: Arc<Shared>,
    /// Set by `shutdown` to the time database work must end by.
    stop: watch::Sender<Option<Instant>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

// === impl UsageWriter ===

impl UsageWriter {
    /// Prepares the spool (creating its folder, counting the rows an earlier run left in it) and starts
    /// the writer task on the current Tokio runtime. Leftover rows are replayed once the database answers.
    pub fn start(store: Store, config: WriterConfig) -> Result<Self, StoreError> {
        if config.batch_size == 0 || config.queue_capacity == 0 {
            return Err(StoreError::invalid(
                "writer",
                "batch_size and queue_capacity must be positive",
            ));
        }
        let spool = Spool::open(&config.spool_path)
            .map_err(|e| StoreError::io(format!("preparing the usage spool {}", config.spool_path.display()), e))?;
        // Counted here, before the request path can add to the spool, so that no row is counted twice.
        // A short blocking read at start: a line count of whatever an earlier run left behind.
        let leftovers = spool
            .count_pending()
            .map_err(|e| StoreError::io(format!("reading the usage spool {}", config.spool_path.display()), e))?;
        if leftovers > 0 {
            tracing::info!(rows = leftovers, spool = %config.spool_path.display(), "usage rows waiting in the spool");
        }
        let counters = Counters::default();
        counters.spool_pending.store(leftovers, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            spool,
            counters,
            up: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            batch_ready: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let batch_at = config.queue_capacity.saturating_sub(config.batch_size);
        let (stop, stop_rx) = watch::channel(None);
        let task = Task {
            store,
            cutoff: stop_rx.clone(),
            shared: shared.clone(),
            backoff: config.retry_min,
            next_retry: Instant::now(),
            down: false,
            rejected_through: 0,
            config,
        };
        let handle = tokio::spawn(task.run(rx, stop_rx));
        Ok(Self {
            tx,
            batch_at,
            shared,
            stop,
            task: Mutex::new(Some(handle)),
        })
    }

    /// Queues a row for the ledger without waiting. When the queue is full the row is spooled instead
    /// and [`Full`] says so; the row is lost only if the spool cannot be written either.
    pub fn try_record(&self, row: UsageRow) -> Result<(), Full> {
        match self.tx.try_send(row) {
            Ok(()) => {
                if self.tx.capacity() <= self.batch_at {
                    self.shared.batch_ready.notify_one();
                }
                Ok(())
            }
            Err(TrySendError::Full(row) | TrySendError::Closed(row)) => {
                let counters = &self.shared.counters;
                // Counted as pending before it is in the file, so that a replay running meanwhile can never
                // subtract it first and leave the count short.
                counters.spool_pending.fetch_add(1, Ordering::Relaxed);
                match self.shared.spool.append(std::slice::from_ref(&row), false) {
                    Ok(()) => {
                        counters.spooled.fetch_add(1, Ordering::Relaxed);
                        Err(Full { spooled: true })
                    }
                    Err(error) => {
                        counters.spool_pending.fetch_sub(1, Ordering::Relaxed);
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            id = %row.id,
                            spool = %self.shared.spool.path().display(),
                            %error,
                            "usage queue full and spool unwritable: usage row lost"
                        );
                        Err(Full { spooled: false })
                    }
                }
            }
        }
    }

    /// The counters now.
    pub fn stats(&self) -> WriterStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            queue_depth: (self.tx.max_capacity() - self.tx.capacity()) as u64,
            written: load(&c.written),
            duplicates: load(&c.duplicates),
            spooled: load(&c.spooled),
            spool_pending: load(&c.spool_pending),
            replayed: load(&c.replayed),
            write_errors: load(&c.write_errors),
            rejected: load(&c.rejected),
            corrupt_lines: load(&c.corrupt_lines),
            dropped: load(&c.dropped),
            database_up: self.shared.up.load(Ordering::Relaxed),
        }
    }

    /// Waits (at most `limit`) until the rows an earlier run left in the spool are in the ledger; false
    /// when some are not by then (the database is down or slow). Meant for the start, before requests
    /// add rows of their own: whatever reads the ledger's totals then (budgets seeded from it) must not
    /// miss rows that were charged before a restart.
    pub async fn leftovers_replayed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.shared.counters.spool_pending.load(Ordering::Relaxed) == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rows in the queue now.
    pub fn queue_depth(&self) -> u64 {
        (self.tx.max_capacity() - self.tx.capacity()) as u64
    }

    /// Stops the writer within `grace`: later `try_record` calls spool; queued rows are written, or
    /// spooled if the database cannot take them in time; one replay is tried if time remains. Returns
    /// the final counters, within `grace`. Calling it again returns at once.
    pub async fn shutdown(&self, grace: Duration) -> WriterStats {
        let now = Instant::now();
        let deadline = now + grace;
        // Database work ends at three quarters of the grace; the last quarter is for the spool.
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.stop.send_replace(Some(now + grace.mul_f64(0.75)));
        let handle = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut handle) = handle
            && tokio::time::timeout_at(deadline, &mut handle).await.is_err()
        {
            handle.abort();
            tracing::error!("usage writer did not finish within its grace; rows it still held are lost");
        }
        self.stats()
    }
}

impl std::fmt::Debug for UsageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageWriter")
            .field("spool", &self.shared.spool.path())
            .field("stats", &self.stats())
            .finish()
    }
}

// === impl Task ===

/// Where rows that could not be written go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// From the queue: spool them.
    Queue,
    /// From the spool: leave them there for the next replay.
    Spool,
}

struct Task {
    store: Store,
    /// When shutdown began, the time database work must end by: a write under way is cut then.
    cutoff: watch::Receiver<Option<Instant>>,
    shared: Arc<Shared>,
    config: WriterConfig,
    down: bool,
    backoff: Duration,
    next_retry: Instant,
    /// How far into the file being replayed its unreadable lines have been rejected.
    rejected_through: u64,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<UsageRow>, mut stop: watch::Receiver<Option<Instant>>) {
        let period = self.config.flush_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        // The queue is read with `try_recv` only, so a row sent never wakes this task: it wakes for a full
        // batch (`batch_ready`) or at the tick.
        let deadline = loop {
            let open = tokio::select! {
                biased;
                changed = stop.changed() => match changed {
                    Ok(()) => match *stop.borrow_and_update() {
                        Some(deadline) => break deadline,
                        None => true,
                    },
                    // The handle was dropped without shutdown.
                    Err(_) => false,
                },
                () = shared.batch_ready.notified() => self.flush_queue(&mut rx, true).await,
                _ = ticker.tick() => {
                    let open = self.flush_queue(&mut rx, false).await;
                    self.maybe_replay().await;
                    open
                }
            };
            if !open {
                break Instant::now() + DEFAULT_DRAIN.mul_f64(0.75);
            }
        };
        self.drain(rx, deadline).await;
    }

    /// Writes what the queue holds, a batch at a time, or only its whole batches when `whole`; `false`
    /// once every handle has gone.
    async fn flush_queue(&mut self, rx: &mut mpsc::Receiver<UsageRow>, whole: bool) -> bool {
        let batch_size = self.config.batch_size;
        loop {
            if whole && rx.len() < batch_size && !rx.is_closed() {
                return true;
            }
            let mut batch = Vec::with_capacity(batch_size.min(rx.len()));
            let open = loop {
                match rx.try_recv() {
                    Ok(row) => {
                        batch.push(row);
                        if batch.len() == batch_size {
                            break true;
                        }
                    }
                    Err(TryRecvError::Empty) => break true,
                    Err(TryRecvError::Disconnected) => break false,
                }
            };
            let full = batch.len() == batch_size;
            if !batch.is_empty() {
                self.flush(batch).await;
            }
            if !open || !full {
                return open;
            }
        }
    }

    async fn flush(&mut self, rows: Vec<UsageRow>) {
        if self.down && Instant::now() < self.next_retry {
            self.spool(rows).await;
        } else {
            self.write(rows, Origin::Queue).await;
        }
    }

    /// Writes `rows`; `false` if the database could not be reached (rows from the queue are spooled).
    async fn write(&mut self, rows: Vec<UsageRow>, origin: Origin) -> bool {
        match self.insert(&rows).await {
            Ok(outcome) => {
                self.count(outcome, origin);
                self.mark_up();
                true
            }
            Err(error) => {
                self.shared.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                if self.diagnose(&error).await == Failure::Transient {
                    self.mark_down(&error);
                    if origin == Origin::Queue {
                        self.spool(rows).await;
                    }
                    false
                } else {
                    tracing::warn!(%error, rows = rows.len(), "usage batch refused; writing its rows one by one");
                    self.write_one_by_one(rows, origin).await
                }
            }
        }
    }

    async fn write_one_by_one(&mut self, rows: Vec<UsageRow>, origin: Origin) -> bool {
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            match self.insert(std::slice::from_ref(&row)).await {
                Ok(outcome) => self.count(outcome, origin),
                Err(error) => {
                    self.shared.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    if self.diagnose(&error).await == Failure::Transient {
                        self.mark_down(&error);
                        if origin == Origin::Queue {
                            self.spool(std::iter::once(row).chain(rows).collect()).await;
                        }
                        return false;
                    }
                    tracing::error!(id = %row.id, %error, "usage row refused by the database; kept in the rejected file");
                    let line = serde_json::to_vec(&row).unwrap_or_else(|_| format!("{row:?}").into_bytes());
                    self.reject(vec![line]).await;
                }
            }
        }
        self.mark_up();
        true
    }

    /// One bounded insert. A timed-out insert may still have committed: the rows are then spooled and
    /// replayed, and the replay ignores them.
    async fn insert(&self, rows: &[UsageRow]) -> Result<InsertOutcome, StoreError> {
        self.bounded(self.store.insert_usage(rows)).await
    }

    /// `work` within `write_timeout`, and cut at the shutdown's cutoff once shutdown has begun.
    async fn bounded<T>(&self, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let timeout = self.config.write_timeout;
        let mut cutoff = self.cutoff.clone();
        let cut = async move {
            let at = loop {
                if let Some(at) = *cutoff.borrow_and_update() {
                    break at;
                }
                if cutoff.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::time::sleep_until(at).await;
        };
        tokio::select! {
            result = tokio::time::timeout(timeout, work) => result.unwrap_or(Err(StoreError::Timeout(timeout))),
            () = cut => Err(StoreError::Timeout(timeout)),
        }
    }

    /// Tells an outage from rows the database refuses: an error of unknown kind with a reachable
    /// database is the rows' fault.
    async fn diagnose(&self, error: &StoreError) -> Failure {
        match error.classify() {
            Failure::Unknown => match self.bounded(self.store.ping()).await {
                Ok(()) => Failure::Data,
                Err(_) => Failure::Transient,
            },
            known => known,
        }
    }

    fn count(&self, outcome: InsertOutcome, origin: Origin) {
        let c = &self.shared.counters;
        c.written.fetch_add(outcome.inserted, Ordering::Relaxed);
        c.duplicates.fetch_add(outcome.duplicates, Ordering::Relaxed);
        if origin == Origin::Spool {
            c.replayed.fetch_add(outcome.inserted, Ordering::Relaxed);
        }
    }

    fn mark_down(&mut self, error: &StoreError) {
        if !self.down {
            tracing::warn!(%error, spool = %self.shared.spool.path().display(), "usage database unavailable; spooling usage rows");
        }
        self.down = true;
        self.shared.up.store(false, Ordering::Relaxed);
        // Full jitter on the upper half: between half the backoff and the whole of it.
        let half = self.backoff / 2;
        let jitter = half.mul_f64(fastrand::f64());
        self.next_retry = Instant::now() + half + jitter;
        self.backoff = (self.backoff * 2).min(self.config.retry_max);
    }

    fn mark_up(&mut self) {
        if self.down {
            tracing::info!("usage database available again");
        }
        self.down = false;
        self.shared.up.store(true, Ordering::Relaxed);
        self.backoff = self.config.retry_min;
    }

    /// Shutdown: everything queued is written by `db_deadline`, or spooled.
    async fn drain(mut self, mut rx: mpsc::Receiver<UsageRow>, db_deadline: Instant) {
        rx.close();
        let mut rows = Vec::with_capacity(rx.len());
        while let Ok(row) = rx.try_recv() {
            rows.push(row);
        }
        let mut failed = false;
        let mut chunks = Vec::new();
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(self.config.batch_size));
            chunks.push(std::mem::replace(&mut rows, rest));
        }
        for chunk in chunks {
            if failed || Instant::now() >= db_deadline {
                self.spool(chunk).await;
                continue;
            }
            match tokio::time::timeout_at(db_deadline, self.write(chunk.clone(), Origin::Queue)).await {
                Ok(true) => {}
                // Already spooled by `write`.
                Ok(false) => failed = true,
                Err(_) => {
                    failed = true;
                    // Possibly written before the timeout too: the replay will ignore it then.
                    self.spool(chunk).await;
                }
            }
        }
        if !failed
            && self.shared.counters.spool_pending.load(Ordering::Relaxed) > 0
            && tokio::time::timeout_at(db_deadline, self.replay(false)).await.is_err()
        {
            tracing::warn!("usage spool replay cut short by shutdown; it resumes at the next start");
        }
        let c = &self.shared.counters;
        tracing::info!(
            written = c.written.load(Ordering::Relaxed),
            spool_pending = c.spool_pending.load(Ordering::Relaxed),
            "usage writer stopped"
        );
    }
}
