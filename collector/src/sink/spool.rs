//! A bounded, durable, ordered queue of batches on disk.
//!
//! A batch is written to `<seq>.batch.tmp`, fsynced, renamed to
//! `<seq>.batch` and the directory fsynced before anyone sends it; it is
//! deleted only after every sink acknowledged it. Each sink has its own
//! cursor (the highest batch it acknowledged, kept durably in
//! `delivered-<sink>` when there are several sinks), so a sink that fails
//! never makes another send a batch again, and each goes at its own pace.
//! After a crash, [`Spool::open`] finds every complete batch (a `.tmp` file
//! is an unfinished write whose batch was never handed out, and is removed)
//! and replays to each sink, in `seq` order with their original tokens, the
//! ones past its cursor.
//!
//! A batch file is a header (sequence, token, resume position) and the
//! records in the schema crate's compact form (a table of the names, each
//! text once or, for the agent's interned names, about once, then the
//! records with names as indexes), the form the batch was built
//! in: writing it writes the batch's bytes where they are held (no copy of
//! the batch in memory), and reading it back allocates each name
//! once, not a record at a time.
//!
//! The spool also remembers how far a replayable input was consumed: the
//! newest batch's [`Resume`] position, kept in a `position` file when the
//! last batch is acknowledged.
//!
//! The agent hands a read's batches out only when the whole read is on
//! disk: it [`Spool::stage`]s them (`<seq>.staged`), then
//! [`Spool::commit`]s the read: the `committed` file names the read's step,
//! its staged batches and the agent's carry (entries it still holds), and
//! only then are they renamed to `.batch`. Opening finishes a commit cut
//! short and discards staged batches no commit names: the agent meters
//! that read again from its journal (`agent::journal`).
//!
//! One process at a time: an open spool holds an exclusive lock on its
//! `lock` file (released when the process ends, however it ends), so two
//! processes never hand out the same sequence number.
//!
//! The spool never drops a batch. `cap_bytes` is where the agent stops
//! reading ([`Spool::full`]): beyond it, counters wait in the kernel until
//! the sinks have taken enough.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tollgate_schema::compact::{self, Rows};

use super::batch::{Batch, Resume};

/// `TGSPOOL` and a compact form's version: a batch file says how its
/// records are laid out.
const fn magic(version: u8) -> [u8; 8] {
    [b'T', b'G', b'S', b'P', b'O', b'O', b'L', b'0' + version]
}

/// What new batch files start with.
const MAGIC: [u8; 8] = magic(tollgate_schema::compact::VERSION);

/// What a batch file holds before its records (postcard).
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    seq: u64,
    token: String,
    resume_at: Resume,
}

/// What went wrong with the spool directory.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed (full disk, permissions...).
    #[error("spool {path}: {action} failed")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another process has the spool open.
    #[error("spool {path} is in use by another process (it holds {path}/lock)")]
    InUse {
        /// The spool directory.
        path: PathBuf,
    },
    /// A batch file is not a batch (corruption). It is left in place.
    #[error("spool file {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Counters of what the spool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batches spooled.
    pub spooled_batches: u64,
    /// Staged batches of a read that never committed, discarded on open
    /// (the read's journal meters it again).
    pub discarded_batches: u64,
}

/// What a commit leaves for the next start: the step it committed, the
/// batches it made deliverable (to finish the renames after a crash) and
/// the agent's carry.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Commit {
    step: u64,
    seqs: Vec<u64>,
    carry: Vec<u8>,
}

/// The spool directory and what is in it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cap_bytes: u64,
    used_bytes: u64,
    /// (seq, file size), oldest first.
    queued: VecDeque<(u64, u64)>,
    next_seq: u64,
    position: Resume,
    stats: SpoolStats,
    /// Per sink: its name and the highest `seq` it acknowledged.
    cursors: Vec<(&'static str, u64)>,
    /// (seq, file size) of the batches staged since the last commit.
    staged: Vec<(u64, u64)>,
    /// The last commit.
    committed: Commit,
    /// The lock file, locked while the spool is open.
    _lock: File,
}

impl Spool {
    /// Open (creating it if needed) the spool in `dir`, [`Spool::full`]
    /// from `cap_bytes` of batches, for `sinks` (their names).
    pub fn open(dir: &Path, cap_bytes: u64, sinks: &[&'static str]) -> Result<Self, SpoolError> {
        let io = |action, source| SpoolError::Io {
            path: dir.to_owned(),
            action,
            source,
        };
        fs::create_dir_all(dir).map_err(|e| io("creating the directory", e))?;
        let lock = File::create(dir.join(LOCK)).map_err(|e| io("creating the lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::InUse {
                    path: dir.to_owned(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("locking", e)),
        }
        let committed = read_commit(dir)?;
        // A commit cut short: finish its renames.
        for &seq in &committed.seqs {
            let staged = dir.join(format!("{seq:020}.staged"));
            if staged.exists() {
                fs::rename(&staged, staged.with_extension("batch"))
                    .map_err(|e| io("finishing a commit", e))?;
            }
        }
        let mut queued = Vec::new();
        let mut discarded_batches = 0;
        let mut highest_staged = 0;
        for entry in fs::read_dir(dir).map_err(|e| io("listing", e))? {
            let entry = entry.map_err(|e| io("listing", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".batch.tmp") || name.ends_with(".staged.tmp") {
                // An unfinished write: that batch was never handed out.
                fs::remove_file(entry.path()).map_err(|e| io("removing an unfinished batch", e))?;
            } else if let Some(seq) = name
                .strip_suffix(".staged")
                .and_then(|s| s.parse::<u64>().ok())
            {
                // A read that never committed: its journal meters it again.
                fs::remove_file(entry.path()).map_err(|e| io("discarding a staged batch", e))?;
                discarded_batches += 1;
                highest_staged = highest_staged.max(seq);
            } else if let Some(seq) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let size = entry
                    .metadata()
                    .map_err(|e| io("reading a batch's size", e))?
                    .len();
                queued.push((seq, size));
            }
        }
        queued.sort_unstable();
        let mut spool = Self {
            dir: dir.to_owned(),
            cap_bytes,
            used_bytes: queued.iter().map(|(_, size)| size).sum(),
            next_seq: queued
                .last()
                .map_or(1, |(seq, _)| seq + 1)
                .max(highest_staged + 1),
            queued: queued.into(),
            position: Resume::default(),
            stats: SpoolStats {
                discarded_batches,
                ..SpoolStats::default()
            },
            cursors: Vec::new(),
            staged: Vec::new(),
            committed,
            _lock: lock,
        };
        for &sink in sinks {
            let cursor = spool.read_number(&cursor_file(sink))?.unwrap_or(0);
            spool.cursors.push((sink, cursor));
        }
        if discarded_batches > 0 {
            tracing::warn!(
                batches = discarded_batches,
                spool = %dir.display(),
                "discarded the staged batches of a read that never committed: its journal meters it again"
            );
        }
        let saved = spool.read_position()?;
        let newest = match spool.queued.back() {
            Some(&(seq, _)) => spool.read(seq)?.resume_at,
            None => Resume::default(),
        };
        spool.position = saved.max(newest);
        let next_seq = spool.read_number("next-seq")?.unwrap_or(1);
        spool.next_seq = spool.next_seq.max(next_seq);
        // A crash between a cursor's write and the removal it allowed.
        spool.forget_delivered()?;
        Ok(spool)
    }

    /// The sequence number the next batch must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// How far the replayable input has been consumed into batches.
    pub fn position(&self) -> Resume {
        self.position
    }

    /// Batches waiting to be acknowledged.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether no batch is waiting.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Bytes of batches on disk.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// The bytes of batches from which it is [`Spool::full`].
    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    /// Whether its batches reached the cap: the agent reads no more until
    /// the sinks have taken some (what it reads is spooled whole, so the
    /// cap can be passed by one read's batches).
    pub fn full(&self) -> bool {
        self.used_bytes >= self.cap_bytes
    }

    /// What the spool did so far.
    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    fn batch_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.batch"))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// When the last commit was written, if one was.
    pub fn last_commit_at(&self) -> Option<std::time::SystemTime> {
        fs::metadata(self.dir.join(COMMITTED))
            .and_then(|m| m.modified())
            .ok()
    }

    /// The step of the last commit (0 before the first).
    pub fn committed_step(&self) -> u64 {
        self.committed.step
    }

    /// The carry of the last commit.
    pub fn carry(&self) -> &[u8] {
        &self.committed.carry
    }

    /// Durably add `batch` (whose `seq` must be [`Spool::next_seq`]).
    pub fn push(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let size = self.write(batch, "batch")?;
        self.queued.push_back((batch.seq, size));
        Ok(())
    }

    /// Durably keep `batch` (whose `seq` must be [`Spool::next_seq`]), to
    /// be handed out from the next [`Spool::commit`] on.
    pub fn stage(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let size = self.write(batch, "staged")?;
        self.staged.push((batch.seq, size));
        Ok(())
    }

    /// Makes the staged batches deliverable, remembering `carry` with the
    /// step committed (returned): the next start finds both, and never
    /// the batches of a step that did not commit.
    pub fn commit(&mut self, carry: Vec<u8>) -> Result<u64, SpoolError> {
        let commit = Commit {
            step: self.committed.step + 1,
            seqs: self.staged.iter().map(|&(seq, _)| seq).collect(),
            carry,
        };
        let path = self.dir.join(COMMITTED);
        let bytes = postcard::to_stdvec(&commit).map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            detail: format!("cannot encode: {e}"),
        })?;
        write_durably(&self.dir, &path, &bytes)?;
        for &(seq, size) in &self.staged {
            let batch = self.batch_path(seq);
            fs::rename(batch.with_extension("staged"), &batch).map_err(|source| {
                SpoolError::Io {
                    path: batch.clone(),
                    action: "committing a staged batch",
                    source,
                }
            })?;
            self.queued.push_back((seq, size));
        }
        if !self.staged.is_empty() {
            sync_dir(&self.dir)?;
        }
        self.staged.clear();
        self.committed = commit;
        Ok(self.committed.step)
    }

    /// Writes `batch` as `<seq>.<extension>`; returns its size.
    fn write(&mut self, batch: &Batch, extension: &str) -> Result<u64, SpoolError> {
        debug_assert_eq!(batch.seq, self.next_seq);
        let header = Header {
            seq: batch.seq,
            token: batch.token.clone(),
            resume_at: batch.resume_at,
        };
        let header =
            postcard::to_extend(&header, MAGIC.to_vec()).map_err(|e| SpoolError::Corrupt {
                path: self.batch_path(batch.seq),
                detail: format!("cannot encode: {e}"),
            })?;
        let path = self.batch_path(batch.seq).with_extension(extension);
        let size = write_durably_with(&self.dir, &path, |file| {
            file.write_all(&header)?;
            Ok(header.len() as u64 + batch.rows.write_into(file)?)
        })?;
        self.next_seq = batch.seq + 1;
        self.used_bytes += size;
        self.position = self.position.max(batch.resume_at);
        self.stats.spooled_batches += 1;
        Ok(size)
    }

    /// The oldest batch `sink` has not acknowledged.
    pub fn next_for(&self, sink: &str) -> Result<Option<Batch>, SpoolError> {
        let done = self.cursor(sink);
        match self.queued.iter().find(|&&(seq, _)| seq > done) {
            Some(&(seq, _)) => self.read(seq).map(Some),
            None => Ok(None),
        }
    }

    fn cursor(&self, sink: &str) -> u64 {
        self.cursors
            .iter()
            .find(|(name, _)| *name == sink)
            .map_or(0, |&(_, seq)| seq)
    }

    /// `sink` has the batch `seq` (and every one before it): remembered,
    /// and the batches every sink has are forgotten.
    pub fn ack(&mut self, sink: &str, seq: u64) -> Result<(), SpoolError> {
        let several = self.cursors.len() > 1;
        let Some(cursor) = self.cursors.iter_mut().find(|(name, _)| *name == sink) else {
            return Err(SpoolError::Corrupt {
                path: self.dir.clone(),
                detail: format!("no sink {sink} was opened with this spool"),
            });
        };
        if seq <= cursor.1 {
            return Ok(());
        }
        cursor.1 = seq;
        // With one sink, removing the batch is the record of its delivery.
        if several {
            let path = self.dir.join(cursor_file(sink));
            write_durably(&self.dir, &path, format!("{seq}\n").as_bytes())?;
        }
        self.forget_delivered()
    }

    /// Removes the batches every sink acknowledged, oldest first.
    fn forget_delivered(&mut self) -> Result<(), SpoolError> {
        let everyone = self.cursors.iter().map(|&(_, seq)| seq).min().unwrap_or(0);
        let mut removed = false;
        while let Some(&(seq, size)) = self.queued.front() {
            if seq > everyone {
                break;
            }
            if self.queued.len() == 1 {
                // The last batch carries the input position: save it first.
                self.write_position()?;
                self.write_next_seq()?;
            }
            let path = self.batch_path(seq);
            fs::remove_file(&path).map_err(|source| SpoolError::Io {
                path: path.clone(),
                action: "removing an acknowledged batch",
                source,
            })?;
            removed = true;
            self.queued.pop_front();
            self.used_bytes -= size;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn read(&self, seq: u64) -> Result<Batch, SpoolError> {
        let path = self.batch_path(seq);
        let bytes = fs::read(&path).map_err(|source| SpoolError::Io {
            path: path.clone(),
            action: "reading a batch",
            source,
        })?;
        let corrupt = |detail: String| SpoolError::Corrupt {
            path: path.clone(),
            detail,
        };
        // Batches spooled by an earlier version are converted as they are
        // read, so an upgrade delivers them (with their tokens) like any.
        let (version, body) = (compact::OLDEST_READABLE..=compact::VERSION)
            .find_map(|v| {
                bytes
                    .strip_prefix(magic(v).as_slice())
                    .map(|body| (v, body))
            })
            .ok_or_else(|| {
                corrupt(match bytes.get(..7) {
                    Some(b"TGSPOOL") => format!(
                        "written by a tollgate whose spool format ({}) this one cannot read; \
                         deliver it with that version",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(8)])
                    ),
                    _ => "no spool header".to_owned(),
                })
            })?;
        let (header, records) =
            postcard::take_from_bytes::<Header>(body).map_err(|e| corrupt(e.to_string()))?;
        let batch = Batch {
            seq: header.seq,
            token: header.token,
            resume_at: header.resume_at,
            rows: Rows::read_version(records, version).map_err(|e| corrupt(e.to_string()))?,
        };
        if batch.seq != seq {
            return Err(corrupt(format!(
                "holds batch {} under the name of {seq}",
                batch.seq
            )));
        }
        Ok(batch)
    }

    fn read_position(&self) -> Result<Resume, SpoolError> {
        let text = self.read_small("position")?;
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        match (parts.next(), parts.next()) {
            (Some(Ok(offset)), Some(Ok(line))) => Ok(Resume { offset, line }),
            (None, _) => Ok(Resume::default()),
            _ => Err(SpoolError::Corrupt {
                path: self.dir.join("position"),
                detail: format!("{text:?} is not `offset line`"),
            }),
        }
    }

    /// The number a small file holds; `None` when it is missing or empty.
    fn read_number(&self, name: &str) -> Result<Option<u64>, SpoolError> {
        let text = self.read_small(name)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| SpoolError::Corrupt {
                path: self.dir.join(name),
                detail: format!("{text:?} is not a number"),
            })
    }

    fn read_small(&self, name: &str) -> Result<String, SpoolError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(SpoolError::Io {
                path,
                action: "reading",
                source,
            }),
        }
    }

    fn write_position(&self) -> Result<(), SpoolError> {
        let text = format!("{} {}\n", self.position.offset, self.position.line);
        write_durably(&self.dir, &self.dir.join("position"), text.as_bytes())
    }

    /// Sequence numbers never repeat, even after the spool empties, so a
    /// file name never names two batches.
    fn write_next_seq(&self) -> Result<(), SpoolError> {
        write_durably(
            &self.dir,
            &self.dir.join("next-seq"),
            format!("{}\n", self.next_seq).as_bytes(),
        )
    }
}

/// The file an open spool holds locked.
const LOCK: &str = "lock";
/// The file holding the last [`Commit`].
const COMMITTED: &str = "committed";

/// The last commit in `dir`, or none yet.
fn read_commit(dir: &Path) -> Result<Commit, SpoolError> {
    let path = dir.join(COMMITTED);
    match fs::read(&path) {
        Ok(bytes) => postcard::from_bytes(&bytes).map_err(|e| SpoolError::Corrupt {
            path,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Commit::default()),
        Err(source) => Err(SpoolError::Io {
            path,
            action: "reading",
            source,
        }),
    }
}

/// Whether another process has the spool in `dir` open.
pub fn held_elsewhere(dir: &Path) -> bool {
    File::open(dir.join(LOCK))
        .is_ok_and(|lock| matches!(lock.try_lock(), Err(fs::TryLockError::WouldBlock)))
}

/// Waits until no process has the spool in `dir` open; returns whether one
/// had (a spool never opened has no lock file, and nobody holds it).
pub fn wait_until_released(dir: &Path) -> Result<bool, SpoolError> {
    let path = dir.join(LOCK);
    let lock = match File::open(&path) {
        Ok(lock) => lock,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(SpoolError::Io {
                path,
                action: "opening",
                source,
            })
        }
    };
    let io = |source| SpoolError::Io {
        path: path.clone(),
        action: "locking",
        source,
    };
    match lock.try_lock() {
        Ok(()) => Ok(false),
        Err(fs::TryLockError::WouldBlock) => lock.lock().map(|()| true).map_err(io),
        Err(fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// The file holding `sink`'s cursor.
fn cursor_file(sink: &str) -> String {
    format!("delivered-{sink}")
}

/// Write `bytes` to `path` so that after a crash the file is either absent
/// (or its old version) or complete: temp file, fsync, rename, fsync dir.
fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    write_durably_with(dir, path, |file| file.write_all(bytes))
}

/// [`write_durably`] of what `write` writes to the file; returns what
/// `write` returns.
fn write_durably_with<T>(
    dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<T>,
) -> Result<T, SpoolError> {
    let tmp = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.tmp", ext.to_string_lossy()),
        None => "tmp".to_owned(),
    });
    let io = |action, source| SpoolError::Io {
        path: tmp.clone(),
        action,
        source,
    };
    let mut file = File::create(&tmp).map_err(|e| io("creating", e))?;
    let written = write(&mut file).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| io("renaming into place", e))?;
    sync_dir(dir)?;
    Ok(written)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SpoolError::Io {
            path: dir.to_owned(),
            action: "syncing the directory",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::batch::TokenMaker;
    use crate::test_support::TempDir;

    fn batch(spool: &Spool, tokens: &TokenMaker, records: usize, offset: u64) -> Batch {
        let record: tollgate_schema::FlowRecord =
            serde_json::from_str(crate::test_support::SAMPLE_RECORD).unwrap();
        Batch {
            seq: spool.next_seq(),
            token: tokens.token(spool.next_seq()),
            resume_at: Resume {
                offset,
                line: offset / 10,
            },
            rows: vec![record; records].iter().collect(),
        }
    }

    fn assert_same(read: &Batch, written: &Batch) {
        let records = |b: &Batch| -> Vec<tollgate_schema::FlowRecord> {
            b.rows.iter().map(|v| v.unwrap().to_record()).collect()
        };
        assert_eq!(
            (read.seq, &read.token, read.resume_at, records(read)),
            (
                written.seq,
                &written.token,
                written.resume_at,
                records(written)
            )
        );
    }

    #[test]
    fn batches_survive_reopening_in_order_and_acks_forget_them() {
        let dir = TempDir::new("spool-order");
        let tokens = TokenMaker::new("n").unwrap();
        let mut spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        let first = batch(&spool, &tokens, 3, 100);
        spool.push(&first).unwrap();
        let second = batch(&spool, &tokens, 2, 200);
        spool.push(&second).unwrap();
        // A crash mid-write leaves a temp file; reopening discards it.
        fs::write(dir.join("00000000000000000003.batch.tmp"), b"partial").unwrap();
        drop(spool);

        let mut spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        assert_eq!(spool.len(), 2);
        assert_same(&spool.next_for("sink").unwrap().unwrap(), &first);
        assert_eq!(spool.position().offset, 200);
        assert!(!dir.join("00000000000000000003.batch.tmp").exists());
        spool.ack("sink", first.seq).unwrap();
        assert_same(&spool.next_for("sink").unwrap().unwrap(), &second);
        spool.ack("sink", second.seq).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.used_bytes(), 0);

        drop(spool);

        // Empty again, it still knows the input position and the next seq.
        let spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        assert_eq!(spool.position().offset, 200);
        assert_eq!(spool.next_seq(), 3);
    }

    #[test]
    fn staged_batches_are_handed_out_only_once_committed() {
        let dir = TempDir::new("spool-stage");
        let tokens = TokenMaker::new("n").unwrap();
        let mut spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        let first = batch(&spool, &tokens, 3, 0);
        spool.stage(&first).unwrap();
        assert!(spool.next_for("sink").unwrap().is_none());
        assert_eq!(spool.commit(b"held".to_vec()).unwrap(), 1);
        assert_same(&spool.next_for("sink").unwrap().unwrap(), &first);
        // A read killed before its commit: its batch is discarded, and the
        // number is not given again.
        let second = batch(&spool, &tokens, 2, 0);
        spool.stage(&second).unwrap();
        drop(spool);
        let mut spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        assert_eq!(
            (spool.len(), spool.committed_step(), spool.carry()),
            (1, 1, b"held".as_slice())
        );
        assert_eq!(spool.stats().discarded_batches, 1);
        assert_eq!(spool.next_seq(), second.seq + 1);
        // A commit killed after its `committed` file, before the renames:
        // opening finishes it.
        let third = batch(&spool, &tokens, 4, 0);
        spool.stage(&third).unwrap();
        spool.commit(Vec::new()).unwrap();
        let third_path = dir.join(format!("{:020}.batch", third.seq));
        fs::rename(&third_path, third_path.with_extension("staged")).unwrap();
        drop(spool);
        let mut spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        assert_eq!((spool.len(), spool.committed_step()), (2, 2));
        assert_eq!(spool.stats().discarded_batches, 0);
        spool.ack("sink", first.seq).unwrap();
        assert_same(&spool.next_for("sink").unwrap().unwrap(), &third);
    }

    #[test]
    fn each_sink_keeps_its_own_cursor_across_reopening() {
        let dir = TempDir::new("spool-cursors");
        let tokens = TokenMaker::new("n").unwrap();
        let sinks = ["clickhouse", "parquet"];
        let mut spool = Spool::open(&dir, 1 << 20, &sinks).unwrap();
        let first = batch(&spool, &tokens, 3, 100);
        spool.push(&first).unwrap();
        let second = batch(&spool, &tokens, 2, 200);
        spool.push(&second).unwrap();
        // ClickHouse takes both while Parquet fails: nothing is forgotten.
        spool.ack("clickhouse", first.seq).unwrap();
        spool.ack("clickhouse", second.seq).unwrap();
        assert_eq!(spool.len(), 2);
        assert!(spool.next_for("clickhouse").unwrap().is_none());
        drop(spool);

        // After a restart ClickHouse is owed nothing, Parquet everything.
        let mut spool = Spool::open(&dir, 1 << 20, &sinks).unwrap();
        assert!(spool.next_for("clickhouse").unwrap().is_none());
        assert_same(&spool.next_for("parquet").unwrap().unwrap(), &first);
        spool.ack("parquet", first.seq).unwrap();
        assert_eq!(spool.len(), 1);
        spool.ack("parquet", second.seq).unwrap();
        assert!(spool.is_empty());
        assert!(spool.ack("s3", 9).is_err());
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = TempDir::new("spool-lock");
        assert!(!wait_until_released(&dir).unwrap());
        let spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        assert!(held_elsewhere(&dir));
        // A second open (its own file description, as another process's
        // would be) is refused while the first is open.
        let err = Spool::open(&dir, 1 << 20, &["sink"]).unwrap_err();
        assert!(matches!(err, SpoolError::InUse { .. }), "{err}");
        let waiter = std::thread::spawn({
            let dir = dir.to_path_buf();
            move || wait_until_released(&dir).unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!waiter.is_finished());
        drop(spool);
        assert!(waiter.join().unwrap(), "it waited");
        Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
    }

    #[test]
    fn a_spool_past_its_cap_is_full_and_keeps_every_batch() {
        let dir = TempDir::new("spool-full");
        let tokens = TokenMaker::new("n").unwrap();
        let mut spool = Spool::open(&dir, 4096, &["sink"]).unwrap();
        let mut pushed = 0;
        while !spool.full() {
            spool.push(&batch(&spool, &tokens, 10, pushed)).unwrap();
            pushed += 1;
        }
        spool.push(&batch(&spool, &tokens, 10, pushed)).unwrap();
        assert!(spool.used_bytes() > 4096);
        assert_eq!(spool.len() as u64, pushed + 1, "no batch is dropped");
        let first = spool.next_for("sink").unwrap().unwrap();
        spool.ack("sink", first.seq + pushed).unwrap();
        assert!(!spool.full(), "acknowledged batches make room");
    }

    /// Batches the previous release spooled (`testdata/spool-v2`: records
    /// 1-20 of its `records.jsonl`, in two batches, without a provider) are
    /// delivered after an upgrade, in order, before the new ones.
    #[test]
    fn a_spool_of_the_previous_release_is_read_in_order() {
        let dir = TempDir::new("spool-v2");
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/spool-v2");
        for seq in [1, 2] {
            let name = format!("{seq:020}.batch");
            assert!(fs::read(golden.join(&name))
                .unwrap()
                .starts_with(b"TGSPOOL2"));
            fs::copy(golden.join(&name), dir.join(&name)).unwrap();
        }
        let mut spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        assert_eq!((spool.len(), spool.position().line), (2, 20));
        let first = spool.next_for("sink").unwrap().unwrap();
        assert_eq!(
            (first.seq, first.token.as_str()),
            (1, "golden-m00000000000000a1-1")
        );
        let records: Vec<_> = first.rows.iter().map(|v| v.unwrap().to_record()).collect();
        assert_eq!(
            records.iter().map(|r| r.bytes_sent).collect::<Vec<_>>(),
            (1..=10).map(|i| i * 1000).collect::<Vec<_>>()
        );
        assert!(records
            .iter()
            .all(|r| r.local_provider.is_empty() && &*r.local_region == "us-east-1"));

        let tokens = TokenMaker::new("n").unwrap();
        let mut new = batch(&spool, &tokens, 2, 30_000);
        let mut record = new.rows.iter().next().unwrap().unwrap().to_record();
        record.local_provider = "aws".into();
        new.rows = [&record].into_iter().collect();
        spool.push(&new).unwrap();
        assert!(fs::read(dir.join(format!("{:020}.batch", new.seq)))
            .unwrap()
            .starts_with(b"TGSPOOL5"));
        drop(spool);

        let mut spool = Spool::open(&dir, 1 << 20, &["sink"]).unwrap();
        let mut order = Vec::new();
        while let Some(batch) = spool.next_for("sink").unwrap() {
            order.push((batch.seq, batch.rows.len()));
            spool.ack("sink", batch.seq).unwrap();
        }
        assert_eq!(order, [(1, 10), (2, 10), (3, 1)]);
        assert!(spool.is_empty());
    }

    #[test]
    fn a_corrupt_batch_is_reported_with_its_path() {
        let dir = TempDir::new("spool-corrupt");
        fs::write(dir.join("00000000000000000001.batch"), b"garbage").unwrap();
        let err = Spool::open(&dir, 1 << 20, &["sink"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("00000000000000000001.batch is corrupt: no spool header"),
            "{err}"
        );
        // The first format (before the compact form) is named, not read.
        fs::write(dir.join("00000000000000000001.batch"), b"TGSPOOL1garbage").unwrap();
        let err = Spool::open(&dir, 1 << 20, &["sink"]).unwrap_err();
        assert!(err.to_string().contains("format (TGSPOOL1)"), "{err}");
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let err = Spool::open(Path::new("/proc/tollgate-spool"), 1 << 20, &["sink"]).unwrap_err();
        assert!(err.to_string().contains("/proc/tollgate-spool"), "{err}");
    }
}
