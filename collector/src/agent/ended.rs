//! Ended connections between the event listener and the reader, on disk.
//!
//! The kernel sends a connection's DESTROY event once, with the bytes it
//! moved since the last zeroing read: from then on the agent holds their
//! only copy until a read commits them. The listener therefore appends
//! each batch of events it receives to a file in the spool directory
//! before anything else (no fsync: a killed process's writes are the page
//! cache's), and the reader meters them from there at its next read. The
//! commit names how far the reader got ([`Position`]), so a restarted agent
//! meters the rest once; and however many connections end between two
//! reads, memory holds none of them.
//!
//! Files are `ended-<generation>`, entries in postcard one after the other
//! (the journal's form, [`super::journal`]), appended by one [`Writer`],
//! which starts the next generation once a file passes [`ROTATE_BYTES`]
//! and leaves the earlier ones to the reader, which removes them once a
//! commit is past them. Every write to a file precedes its successor's
//! creation: a reader that saw the successor reads the file to its end once
//! more and goes on with the successor.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::journal::{self, EntriesError, JournalError};
use crate::conntrack::{Entry, Mark};

/// A file's size from which the writer starts the next one.
pub const ROTATE_BYTES: u64 = 16 << 20;

/// How far the reader has handed entries on: a generation and an offset
/// in its file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The file's generation.
    pub generation: u64,
    /// Bytes of it handed on.
    pub offset: u64,
}

const PREFIX: &str = "ended-";

fn path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{generation:020}"))
}

/// The generations of the files in `dir`, oldest first.
fn generations(dir: &Path) -> Result<Vec<u64>, JournalError> {
    Ok(journal::numbered(dir, PREFIX)?
        .into_iter()
        .map(|(generation, _)| generation)
        .collect())
}

/// What reading the entries of the file at `path` from `offset` met.
fn reading_failed(path: &Path, offset: u64, error: EntriesError) -> JournalError {
    match error {
        EntriesError::Io(source) => JournalError::Io {
            path: path.to_owned(),
            action: "reading",
            source,
        },
        EntriesError::Decode { entry, error } => JournalError::Corrupt {
            path: path.to_owned(),
            detail: format!("entry {entry} after offset {offset} does not decode: {error}"),
        },
    }
}

/// A generation after every file in `dir`.
fn next_generation(dir: &Path) -> Result<u64, JournalError> {
    Ok(generations(dir)?.last().map_or(1, |last| last + 1))
}

/// The listener's side: appends batches of ended connections.
pub struct Writer {
    dir: PathBuf,
    generation: u64,
    file: File,
    written: u64,
    encoded: Vec<u8>,
    /// Where each entry of `encoded` ends.
    ends: Vec<usize>,
    /// Entries a failed write left, written first next time.
    unwritten: Vec<Entry>,
}

impl Writer {
    /// A writer of a generation after every file in `dir`: the files of a
    /// killed agent stay as they are, for its successor's reader.
    pub fn create(dir: &Path) -> Result<Self, JournalError> {
        let generation = next_generation(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            generation,
            file: create(dir, generation)?,
            written: 0,
            encoded: Vec::new(),
            ends: Vec::new(),
            unwritten: Vec::new(),
        })
    }

    /// Goes on in `dir`, in a generation after every file there (an agent
    /// taking over moves its listener from `handover/` into the spool);
    /// returns that generation. What was written stays where it is.
    pub fn move_to(&mut self, dir: &Path) -> Result<u64, JournalError> {
        let generation = next_generation(dir)?;
        self.file = create(dir, generation)?;
        dir.clone_into(&mut self.dir);
        self.generation = generation;
        self.written = 0;
        Ok(generation)
    }

    /// Appends `entries` in one write. On failure (a full disk) the
    /// entries not written whole are kept, the file is cut back to the
    /// last whole entry (a reader never takes a part of one), and they are
    /// written before the next ones: a kill meanwhile loses them.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), JournalError> {
        self.unwritten.extend_from_slice(entries);
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let path = path(&self.dir, self.generation);
        self.encoded.clear();
        self.ends.clear();
        for entry in &self.unwritten {
            journal::encode(std::slice::from_ref(entry), &mut self.encoded).map_err(|e| {
                JournalError::Corrupt {
                    path: path.clone(),
                    detail: format!("cannot encode: {e}"),
                }
            })?;
            self.ends.push(self.encoded.len());
        }
        let mut sent = 0;
        let failed = loop {
            match self.file.write(&self.encoded[sent..]) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    sent += n;
                    if sent == self.encoded.len() {
                        break None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let whole = self.ends.iter().take_while(|&&end| end <= sent).count();
        let kept = whole.checked_sub(1).map_or(0, |last| self.ends[last]);
        self.written += kept as u64;
        self.unwritten.drain(..whole);
        if let Some(source) = failed {
            let cut = self
                .file
                .set_len(self.written)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.written)));
            return Err(JournalError::Io {
                path,
                action: if cut.is_ok() {
                    "writing"
                } else {
                    "writing, then cutting back a part of an entry"
                },
                source,
            });
        }
        if self.written >= ROTATE_BYTES {
            self.file = create(&self.dir, self.generation + 1)?;
            self.generation += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Where what was written so far ends: the inbox records it before each
    /// receive.
    pub fn kept_up_to(&self) -> Mark {
        Mark {
            file: self.generation,
            offset: self.written,
        }
    }

    /// Appends to the file the killed agent wrote the ended connections it
    /// received when its writer was at `received_at`, but for those that
    /// file holds after that mark (the kill cut their write short): each
    /// is queued once, and a kill during this leaves them where a second
    /// recovery finds them. They are matched by value, not counted: the
    /// killed agent dropped repeats before writing, and may have written
    /// entries an earlier failed write left. Run before this writer's first
    /// append and before any reader reads: that file is then the last the
    /// killed agent wrote, and every reader reads it to its end before this
    /// writer's. A part of an entry the kill left is cut off. Returns how
    /// many were written already.
    pub fn recover(&mut self, received_at: Mark, entries: &[Entry]) -> Result<u64, JournalError> {
        if received_at.file >= self.generation {
            // Not a predecessor's file here: the killed agent wrote in
            // another directory (it was waiting to take over). Queued
            // again rather than lost.
            self.append(entries)?;
            return Ok(0);
        }
        let path = path(&self.dir, received_at.file);
        let io = |action, source| JournalError::Io {
            path: path.clone(),
            action,
            source,
        };
        let mut file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            // A file is removed once a commit is past it, which needs a
            // successor, created only after the write before it: every
            // entry of the receive was written.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries.len() as u64),
            Err(e) => return Err(io("opening", e)),
        };
        let len = file.metadata().map_err(|e| io("reading", e))?.len();
        let from = received_at.offset.min(len);
        file.seek(SeekFrom::Start(from))
            .map_err(|e| io("seeking", e))?;
        let mut written = Vec::new();
        let read = journal::read_entries(&mut file, |entry| written.push(*entry))
            .map_err(|error| reading_failed(&path, from, error))?;
        let end = from + read.bytes;
        file.set_len(end).map_err(|e| io("cutting its tail", e))?;
        file.seek(SeekFrom::Start(end))
            .map_err(|e| io("seeking", e))?;
        let missing: Vec<Entry> = entries
            .iter()
            .filter(|entry| !written.contains(entry))
            .copied()
            .collect();
        let mut encoded = Vec::new();
        journal::encode(&missing, &mut encoded).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            detail: format!("cannot encode: {e}"),
        })?;
        file.write_all(&encoded).map_err(|e| io("writing", e))?;
        Ok((entries.len() - missing.len()) as u64)
    }

    /// Marks its file as written now: the listener stops listening, and
    /// the next agent measures from here how long the node went unwatched
    /// ([`last_written_at`]).
    pub fn mark_stopped(&self) {
        if let Err(error) = self.file.set_modified(std::time::SystemTime::now()) {
            tracing::warn!(%error, "cannot mark when this agent stopped listening");
        }
    }

    /// Entries waiting for a write that failed.
    pub fn unwritten(&self) -> usize {
        self.unwritten.len()
    }
}

fn create(dir: &Path, generation: u64) -> Result<File, JournalError> {
    let path = path(dir, generation);
    File::create(&path).map_err(|source| JournalError::Io {
        path,
        action: "creating",
        source,
    })
}

/// When a writer last appended to a file in `dir`, or stopped
/// ([`Writer::mark_stopped`]), if one did.
pub fn last_written_at(dir: &Path) -> Option<std::time::SystemTime> {
    generations(dir)
        .ok()?
        .into_iter()
        .filter_map(|generation| {
            std::fs::metadata(path(dir, generation))
                .ok()?
                .modified()
                .ok()
        })
        .max()
}

/// Hands on every whole entry of the files in `dir` of generations below
/// `below`, oldest first.
pub fn read_all(
    dir: &Path,
    below: u64,
    mut on_entry: impl FnMut(&Entry),
) -> Result<u64, JournalError> {
    let mut handed_on = 0;
    for generation in generations(dir)?.into_iter().filter(|&g| g < below) {
        let path = path(dir, generation);
        let mut file = File::open(&path).map_err(|source| JournalError::Io {
            path: path.clone(),
            action: "opening",
            source,
        })?;
        let read = journal::read_entries(&mut file, &mut on_entry)
            .map_err(|e| reading_failed(&path, 0, e))?;
        handed_on += read.entries;
    }
    Ok(handed_on)
}

/// The reader's side: hands on what the writers appended, from a position.
pub struct Queue {
    dir: PathBuf,
    at: Position,
}

impl Queue {
    /// The queue in `dir`, read from `at` (the last commit's position).
    pub fn new(dir: &Path, at: Position) -> Self {
        Self {
            dir: dir.to_owned(),
            at,
        }
    }

    /// How far entries were handed on.
    pub fn position(&self) -> Position {
        self.at
    }

    /// Hands on every entry appended since the last call, oldest first;
    /// returns how many.
    pub fn drain(&mut self, mut on_entry: impl FnMut(&Entry)) -> Result<u64, JournalError> {
        let mut handed_on = 0;
        loop {
            let later = generations(&self.dir)?
                .into_iter()
                .find(|&generation| generation > self.at.generation);
            let path = path(&self.dir, self.at.generation);
            let io = |action, source| JournalError::Io {
                path: path.clone(),
                action,
                source,
            };
            match File::open(&path) {
                Ok(mut file) => {
                    file.seek(SeekFrom::Start(self.at.offset))
                        .map_err(|e| io("seeking", e))?;
                    let read = journal::read_entries(&mut file, |entry| on_entry(entry))
                        .map_err(|e| reading_failed(&path, self.at.offset, e))?;
                    handed_on += read.entries;
                    self.at.offset += read.bytes;
                    if read.cut && later.is_some() {
                        tracing::warn!(
                            file = %path.display(),
                            "an ended connection's event was cut short by a kill; its bytes are lost, unless an agent taking over queued it too"
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("opening", e)),
            }
            // Its successor exists: nothing more will be written to it.
            match later {
                Some(generation) => {
                    self.at = Position {
                        generation,
                        offset: 0,
                    }
                }
                None => return Ok(handed_on),
            }
        }
    }

    /// Removes the files before the position `committed`: a commit holds
    /// every entry they had.
    pub fn forget_before(&self, committed: Position) -> Result<(), JournalError> {
        match committed.generation.checked_sub(1) {
            Some(last) => journal::remove_numbered_through(&self.dir, PREFIX, last),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ended, TempDir};

    fn ports(queue: &mut Queue) -> Vec<u16> {
        let mut ports = Vec::new();
        queue
            .drain(|entry| ports.push(entry.orig.l4.ports().unwrap().0))
            .unwrap();
        ports
    }

    #[test]
    fn entries_are_handed_on_once_across_files_writers_and_restarts() {
        let dir = TempDir::new("ended-queue");
        let mut writer = Writer::create(&dir).unwrap();
        let mut queue = Queue::new(&dir, Position::default());
        assert!(ports(&mut queue).is_empty());
        writer.append(&[ended(1), ended(2)]).unwrap();
        assert_eq!(ports(&mut queue), [1, 2]);
        assert!(ports(&mut queue).is_empty());
        writer.append(&[ended(3)]).unwrap();
        // A commit here, then a kill: the successor's reader starts from
        // the commit, its writer in a generation of its own.
        let committed = queue.position();
        writer.append(&[ended(4)]).unwrap();
        drop(writer);
        let mut writer = Writer::create(&dir).unwrap();
        writer.append(&[ended(5)]).unwrap();
        let mut queue = Queue::new(&dir, committed);
        assert_eq!(ports(&mut queue), [3, 4, 5]);
        queue.forget_before(queue.position()).unwrap();
        assert_eq!(generations(&dir).unwrap(), [2]);

        // A file past the rotation size gives way to the next; a write cut
        // short in the dead file is skipped.
        let big: Vec<Entry> = (0..400_000u32)
            .map(|i| ended(u16::try_from(i % 60_000).unwrap() + 10))
            .collect();
        for chunk in big.chunks(10_000) {
            writer.append(chunk).unwrap();
        }
        assert!(generations(&dir).unwrap().len() >= 2, "rotated");
        writer.append(&[ended(7)]).unwrap();
        assert_eq!(ports(&mut queue).len(), 400_001);
        let mut cut = std::fs::OpenOptions::new()
            .append(true)
            .open(path(&dir, writer.generation))
            .unwrap();
        let mut half = Vec::new();
        journal::encode(&[ended(8)], &mut half).unwrap();
        cut.write_all(&half[..half.len() / 2]).unwrap();
        // Not yet: the rest of the entry may still be on its way.
        assert!(ports(&mut queue).is_empty());
        drop(writer);
        let mut writer = Writer::create(&dir).unwrap();
        writer.append(&[ended(9)]).unwrap();
        assert_eq!(ports(&mut queue), [9]);
    }

    #[test]
    fn connections_received_again_after_a_kill_are_queued_once() {
        let dir = TempDir::new("ended-recover");
        let mut writer = Writer::create(&dir).unwrap();
        writer.append(&[ended(1)]).unwrap();
        let mark = writer.kept_up_to();
        // Killed inside the write of the receive after the mark, in its
        // second entry.
        let received = [ended(2), ended(3), ended(4)];
        let mut encoded = Vec::new();
        journal::encode(&received, &mut encoded).unwrap();
        let mut first = Vec::new();
        journal::encode(&received[..1], &mut first).unwrap();
        writer.file.write_all(&encoded[..first.len() + 2]).unwrap();
        drop(writer);

        let mut writer = Writer::create(&dir).unwrap();
        assert_eq!(writer.recover(mark, &received).unwrap(), 1);
        let mut queue = Queue::new(&dir, Position::default());
        assert_eq!(ports(&mut queue), [1, 2, 3, 4]);
        // Killed again after that recovery: nothing is queued twice.
        let mut writer = Writer::create(&dir).unwrap();
        assert_eq!(writer.recover(mark, &received).unwrap(), 3);
        assert!(ports(&mut queue).is_empty());

        // Received and not written at all: all queued. Its file gone (a
        // commit past it): all written before.
        let mark = writer.kept_up_to();
        let mut successor = Writer::create(&dir).unwrap();
        assert_eq!(successor.recover(mark, &[ended(5)]).unwrap(), 0);
        assert_eq!(ports(&mut queue), [5]);
        let gone = Mark { file: 1, offset: 0 };
        std::fs::remove_file(path(&dir, 1)).unwrap();
        assert_eq!(successor.recover(gone, &[ended(6)]).unwrap(), 1);
        assert!(ports(&mut queue).is_empty());

        // The killed agent dropped a repeat before writing: matched by
        // value, the connections it wrote are not queued again.
        let mark = successor.kept_up_to();
        successor.append(&[ended(7), ended(8)]).unwrap();
        drop(successor);
        let mut writer = Writer::create(&dir).unwrap();
        assert_eq!(
            writer
                .recover(mark, &[ended(1), ended(7), ended(8)])
                .unwrap(),
            2
        );
        assert_eq!(ports(&mut queue), [7, 8, 1]);
        // A mark of no predecessor's file here: queued by the writer.
        let elsewhere = Mark {
            file: writer.generation,
            offset: 0,
        };
        assert_eq!(writer.recover(elsewhere, &[ended(9)]).unwrap(), 0);
        assert_eq!(ports(&mut queue), [9]);
    }
}
