//! The writer task's side of the spool: rows appended when the database cannot take them, lines that
//! cannot be read set aside, and the replay of the spool into the ledger.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Origin, Task};
use crate::ledger::UsageRow;

impl Task {
    pub(super) async fn spool(&self, rows: Vec<UsageRow>) {
        let count = rows.len() as u64;
        let c = &self.shared.counters;
        c.spool_pending.fetch_add(count, Ordering::Relaxed);
        let shared = self.shared.clone();
        let result = tokio::task::spawn_blocking(move || shared.spool.append(&rows, true)).await;
        if !matches!(result, Ok(Ok(()))) {
            c.spool_pending.fetch_sub(count, Ordering::Relaxed);
        }
        match result {
            Ok(Ok(())) => {
                c.spooled.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                c.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::error!(rows = count, spool = %self.shared.spool.path().display(), %error, "cannot write the usage spool: usage rows lost");
            }
            Err(error) => {
                c.dropped.fetch_add(count, Ordering::Relaxed);
                tracing::error!(rows = count, %error, "spooling usage rows failed: usage rows lost");
            }
        }
    }

    pub(super) async fn reject(&self, lines: Vec<Vec<u8>>) {
        let count = lines.len() as u64;
        self.shared.counters.rejected.fetch_add(count, Ordering::Relaxed);
        let shared = self.shared.clone();
        let result = tokio::task::spawn_blocking(move || shared.spool.reject(&lines)).await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::error!(rows = count, file = %self.shared.spool.rejected_path().display(), "cannot write the rejected usage file");
        }
    }

    pub(super) async fn maybe_replay(&mut self) {
        if self.shared.counters.spool_pending.load(Ordering::Relaxed) == 0
            || (self.down && Instant::now() < self.next_retry)
        {
            return;
        }
        self.replay(true).await;
    }

    /// Replays the spool; `false` if it stopped before the end (the database failed, or `interruptible`
    /// and shutdown began), leaving the file for next time.
    pub(super) async fn replay(&mut self, interruptible: bool) -> bool {
        let shared = self.shared.clone();
        let opened = tokio::task::spawn_blocking(move || {
            if shared.spool.rotate()? {
                shared.spool.open_replay().map(Some)
            } else {
                Ok(None)
            }
        })
        .await;
        let mut reader = match opened {
            Ok(Ok(Some(reader))) => reader,
            Ok(Ok(None)) => return true,
            Ok(Err(error)) => {
                tracing::error!(spool = %self.shared.spool.path().display(), %error, "cannot open the usage spool for replay");
                return false;
            }
            Err(error) => {
                tracing::error!(%error, "opening the usage spool failed");
                return false;
            }
        };
        let batch_size = self.config.batch_size;
        let mut lines = 0u64;
        loop {
            let read = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk(batch_size);
                (reader, chunk)
            })
            .await;
            let chunk = match read {
                Ok((back, Ok(chunk))) => {
                    reader = back;
                    chunk
                }
                Ok((_, Err(error))) => {
                    tracing::error!(%error, "cannot read the usage spool");
                    return false;
                }
                Err(error) => {
                    tracing::error!(%error, "reading the usage spool failed");
                    return false;
                }
            };
            if chunk.lines == 0 {
                break;
            }
            if interruptible && self.shared.stopping.load(Ordering::Relaxed) {
                return false;
            }
            // A replay cut short starts over from the file's first line: lines rejected by an earlier
            // attempt are not rejected (nor counted) again.
            let already = self.rejected_through;
            let bad: Vec<Vec<u8>> = chunk
                .bad
                .into_iter()
                .filter(|(end, _)| *end > already)
                .map(|(end, line)| {
                    self.rejected_through = end;
                    line
                })
                .collect();
            if !bad.is_empty() {
                let corrupt = bad.len() as u64;
                tracing::error!(
                    lines = corrupt,
                    file = %self.shared.spool.rejected_path().display(),
                    "unreadable usage spool lines (torn or not usage rows); kept in the rejected file"
                );
                self.shared.counters.corrupt_lines.fetch_add(corrupt, Ordering::Relaxed);
                self.reject(bad).await;
            }
            if !chunk.rows.is_empty() && !self.write(chunk.rows, Origin::Spool).await {
                return false;
            }
            lines += chunk.lines;
        }
        let shared = self.shared.clone();
        match tokio::task::spawn_blocking(move || shared.spool.finish_replay()).await {
            Ok(Ok(())) => self.rejected_through = 0,
            _ => tracing::error!(
                "cannot delete the replayed usage spool; its rows will be replayed again (ignored as duplicates)"
            ),
        }
        let pending = &self.shared.counters.spool_pending;
        let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(lines)));
        tracing::info!(rows = lines, "usage spool replayed");
        true
    }
}
