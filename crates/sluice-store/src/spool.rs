//! The local spool: usage rows as JSON lines while the database cannot take them.
//!
//! Three files side by side:
//! - `PATH` (e.g. `data/usage.spool`): rows are appended here, by the writer task during an outage and by
//!   the request path when the queue is full.
//! - `PATH.replaying`: a replay first renames `PATH` to this (under the append lock, so no append is
//!   lost), replays it, then deletes it. A crash or an outage during a replay leaves it in place and the
//!   next replay starts over from its first line: inserts are idempotent by row id, so rows already
//!   replayed are ignored, never counted twice.
//! - `PATH.rejected`: lines that cannot be read (torn by a crash mid-append, cut inside a multi-byte
//!   character, not JSON) and rows the database refuses for their values, kept byte for byte for an
//!   operator rather than dropped.
//!
//! Lines are read as bytes, never as text: one bad line is rejected alone and never stops a start or a
//! replay. When the spool's last line was torn (no newline), opening the spool ends it with a newline, so
//! that the next append starts a line of its own. Lines written by versions before the ledger's 0002
//! migration (OpenAI-shaped counts, the client's request id as the key) are read and mapped as that
//! migration maps the ledger's rows.
//!
//! One process per spool file: two gateways must not share one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::ledger::{LegacyUsageRow, UsageRow};

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
    /// Lines that are not usage rows (a torn last line after a crash, say), as read, each with the
    /// offset in the file just past it.
    pub(crate) bad: Vec<(u64, Vec<u8>)>,
}

pub(crate) struct Replay {
    reader: BufReader<File>,
    /// Bytes read so far.
    offset: u64,
}

impl Spool {
    /// Prepares the spool at `path`, creating its folder, and ends a torn last line (see the module docs).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        end_torn_line(path)?;
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
            offset: 0,
        })
    }

    /// The replayed file is in the database: delete it.
    pub(crate) fn finish_replay(&self) -> io::Result<()> {
        fs::remove_file(&self.replaying)
    }

    /// Keeps lines the database will never take (or that are not rows at all), for an operator.
    pub(crate) fn reject(&self, lines: &[Vec<u8>]) -> io::Result<()> {
        let mut file = OpenOptions::new().create(true).append(true).open(&self.rejected)?;
        let mut buffer = Vec::new();
        for line in lines {
            buffer.extend_from_slice(line.trim_ascii_end());
            buffer.push(b'\n');
        }
        file.write_all(&buffer)?;
        file.sync_data()
    }

    /// Lines waiting in the spool and in an unfinished replay (counted at start).
    pub(crate) fn count_pending(&self) -> io::Result<u64> {
        let mut lines = 0;
        for path in [&self.path, &self.replaying] {
            match File::open(path) {
                Ok(file) => {
                    for line in BufReader::new(file).split(b'\n') {
                        if !line?.trim_ascii().is_empty() {
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
        let mut line = Vec::new();
        while chunk.rows.len() + chunk.bad.len() < max {
            line.clear();
            let read = self.reader.read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            self.offset += read as u64;
            if line.trim_ascii().is_empty() {
                continue;
            }
            chunk.lines += 1;
            match parse_line(&line) {
                Some(row) => chunk.rows.push(row),
                None => chunk.bad.push((self.offset, line.clone())),
            }
        }
        Ok(chunk)
    }
}

/// A spooled row, in this version's shape or in the one before the ledger's 0002 migration. `None` for
/// anything else (torn, not UTF-8, not JSON, not a row).
fn parse_line(line: &[u8]) -> Option<UsageRow> {
    serde_json::from_slice::<UsageRow>(line)
        .ok()
        .or_else(|| serde_json::from_slice::<LegacyUsageRow>(line).ok().map(UsageRow::from))
}

/// Ends the file's last line with a newline if a crash left it torn, so that appends start a new line.
fn end_torn_line(path: &Path) -> io::Result<()> {
    let mut file = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("usage.spool")
    }

    #[test]
    fn a_torn_last_line_is_ended_and_counted_and_never_joins_the_next_row() {
        let path = scratch("torn");
        // A line cut inside "é" (0xC3 0xA9): not UTF-8, no newline.
        let mut torn = br#"{"id":"x","model":"caf"#.to_vec();
        torn.push(0xC3);
        fs::write(&path, &torn).unwrap();
        let spool = Spool::open(&path).unwrap();
        assert_eq!(spool.count_pending().unwrap(), 1);
        assert!(fs::read(&path).unwrap().ends_with(b"\xC3\n"));
        // Opening again changes nothing.
        drop(Spool::open(&path).unwrap());
        assert_eq!(fs::read(&path).unwrap().len(), torn.len() + 1);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn bad_lines_are_kept_apart_byte_for_byte() {
        let path = scratch("bad");
        let spool = Spool::open(&path).unwrap();
        let mut text = b"not json\n\n".to_vec();
        text.extend_from_slice(&[0xFF, 0xFE, b'\n']);
        fs::write(&path, &text).unwrap();
        assert_eq!(spool.count_pending().unwrap(), 2);
        assert!(spool.rotate().unwrap());
        let chunk = spool.open_replay().unwrap().next_chunk(10).unwrap();
        assert_eq!((chunk.lines, chunk.rows.len()), (2, 0));
        let ends: Vec<u64> = chunk.bad.iter().map(|(end, _)| *end).collect();
        assert_eq!(ends, [9, 13]);
        let lines: Vec<Vec<u8>> = chunk.bad.into_iter().map(|(_, line)| line).collect();
        spool.reject(&lines).unwrap();
        let kept = fs::read(spool.rejected_path()).unwrap();
        assert_eq!(kept, b"not json\n\xFF\xFE\n");
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
