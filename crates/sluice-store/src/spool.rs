//! The local spool: usage rows as JSON lines while the database cannot take them.
//!
//! Three files side by side:
//! - `PATH` (e.g. `data/usage.spool`): rows are appended here, by the writer task during an outage and by
//!   the request path when the queue is full.
//! - `PATH.replaying`: a replay first renames `PATH` to this (under the append lock, so no append is
//!   lost), replays it, then deletes it. A crash or an outage during a replay leaves it in place and the
//!   next replay starts over from its first line: inserts are idempotent by request id, so rows already
//!   replayed are ignored, never counted twice.
//! - `PATH.rejected`: lines that cannot be parsed and rows the database refuses for their values, kept for
//!   an operator rather than dropped.
//!
//! One process per spool file: two gateways must not share one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::model::UsageRow;

pub(crate) struct Spool {
    path: PathBuf,
    replaying: PathBuf,
    rejected: PathBuf,
    /// The append handle, opened on first use and closed when the file is rotated.
    file: Mutex<Option<File>>,
}

/// A run of lines read back from the file being replayed.
pub(crate) struct Chunk {
    /// Lines read (parsed or not); zero at the end of the file.
    pub(crate) lines: u64,
    pub(crate) rows: Vec<UsageRow>,
    /// Lines that are not usage rows (a torn last line after a crash, say).
    pub(crate) bad: Vec<String>,
}

pub(crate) struct Replay {
    reader: BufReader<File>,
}

impl Spool {
    /// Prepares the spool at `path`, creating its folder.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let with = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        Ok(Self {
            path: path.to_owned(),
            replaying: with(".replaying"),
            rejected: with(".rejected"),
            file: Mutex::new(None),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn rejected_path(&self) -> &Path {
        &self.rejected
    }

    /// Appends rows as JSON lines in one write; with `sync`, waits for the data to reach the disk.
    pub(crate) fn append(&self, rows: &[UsageRow], sync: bool) -> io::Result<()> {
        let mut buffer = Vec::with_capacity(rows.len() * 384);
        for row in rows {
            serde_json::to_writer(&mut buffer, row)?;
            buffer.push(b'\n');
        }
        let to_sync = {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            if file.is_none() {
                *file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
            }
            match file.as_mut() {
                Some(file) => {
                    file.write_all(&buffer)?;
                    // The fsync happens outside the lock, so that the request path never waits for one.
                    if sync { Some(file.try_clone()?) } else { None }
                }
                None => None,
            }
        };
        if let Some(file) = to_sync {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Makes the rows spooled so far ready to replay: `true` if there is a file to replay (one left by an
    /// earlier attempt, or the spool just renamed), `false` if there is nothing.
    pub(crate) fn rotate(&self) -> io::Result<bool> {
        if self.replaying.exists() {
            return Ok(true);
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        match fs::metadata(&self.path) {
            Ok(meta) if meta.len() > 0 => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        if let Some(open) = file.take() {
            open.sync_data()?;
        }
        fs::rename(&self.path, &self.replaying)?;
        Ok(true)
    }

    pub(crate) fn open_replay(&self) -> io::Result<Replay> {
        Ok(Replay {
            reader: BufReader::new(File::open(&self.replaying)?),
        })
    }

    /// The replayed file is in the database: delete it.
    pub(crate) fn finish_replay(&self) -> io::Result<()> {
        fs::remove_file(&self.replaying)
    }

    /// Keeps lines the database will never take, for an operator.
    pub(crate) fn reject(&self, lines: &[String]) -> io::Result<()> {
        let mut file = OpenOptions::new().create(true).append(true).open(&self.rejected)?;
        let mut buffer = String::new();
        for line in lines {
            buffer.push_str(line.trim_end());
            buffer.push('\n');
        }
        file.write_all(buffer.as_bytes())?;
        file.sync_data()
    }

    /// Lines waiting in the spool and in an unfinished replay (counted at start).
    pub(crate) fn count_pending(&self) -> io::Result<u64> {
        let mut lines = 0;
        for path in [&self.path, &self.replaying] {
            match File::open(path) {
                Ok(file) => {
                    for line in BufReader::new(file).lines() {
                        if !line?.trim().is_empty() {
                            lines += 1;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(lines)
    }
}

impl Replay {
    /// Reads up to `max` lines.
    pub(crate) fn next_chunk(&mut self, max: usize) -> io::Result<Chunk> {
        let mut chunk = Chunk {
            lines: 0,
            rows: Vec::with_capacity(max),
            bad: Vec::new(),
        };
        let mut line = String::new();
        while chunk.rows.len() + chunk.bad.len() < max {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            chunk.lines += 1;
            match serde_json::from_str::<UsageRow>(&line) {
                Ok(row) => chunk.rows.push(row),
                Err(_) => chunk.bad.push(line.clone()),
            }
        }
        Ok(chunk)
    }
}
