//! A read's zeroed entries on disk before anything else happens to them, so
//! an agent killed part-way meters them once after it restarts.
//!
//! A zeroing request empties the kernel's counters: from then on the
//! entry's bytes exist only in the agent. Each read therefore writes the
//! entries the kernel answered with into a journal in the spool directory
//! (one write per batch of requests, no fsync: a killed process's writes
//! are the kernel's page cache, and survive it) before they are enriched.
//! The read's records become deliverable only when the read commits
//! ([`crate::sink::spool::Spool::commit`]), which names the read's step;
//! its journal is then removed. A restarted agent replays the journals of
//! steps that never committed, and discards their uncommitted batches, so
//! each entry is metered exactly once.
//!
//! A journal is `TGJRNL01`, the read's `observed_at` and interval (u32,
//! little-endian), then entries in postcard, one after the other. A kill
//! during a write leaves the last entry cut short: replay stops there (no
//! strict prefix of an entry's encoding decodes, every field being
//! required and varints self-delimiting).

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::conntrack::{Entry, Keep, Mark};

const MAGIC: &[u8; 8] = b"TGJRNL01";
const HEADER: usize = MAGIC.len() + 8;
/// Bytes read at a time when replaying: memory stays flat in the journal's
/// size.
const CHUNK: usize = 1 << 20;

/// What went wrong with a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("journal {path}: {action} failed")]
    Io {
        /// The journal or its directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Not a journal, or one whose body does not decode.
    #[error("journal {path} is corrupt: {detail}")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// A journal file found in the spool directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// The step its read commits as.
    pub step: u64,
    /// The file.
    pub path: PathBuf,
}

/// When a journal's entries were read: the read's time and interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTime {
    /// The read's wall-clock second.
    pub observed_at: u32,
    /// Seconds since the read before it.
    pub interval: u32,
}

/// A read whose commit failed leaves its journal; the next read commits
/// as the same step, so the name also holds the read's time.
fn name(step: u64, time: ReadTime) -> String {
    format!("journal-{step:020}-{:010}", time.observed_at)
}

/// Starts the journal of the read that commits as `step`.
pub fn create(dir: &Path, step: u64, time: ReadTime) -> Result<File, JournalError> {
    let path = dir.join(name(step, time));
    let io = |action, source| JournalError::Io {
        path: path.clone(),
        action,
        source,
    };
    let mut file = File::create(&path).map_err(|e| io("creating", e))?;
    let mut header = [0; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&time.observed_at.to_le_bytes());
    header[12..].copy_from_slice(&time.interval.to_le_bytes());
    file.write_all(&header).map_err(|e| io("writing", e))?;
    Ok(file)
}

/// More than any entry's encoding: IPv6 tuples and every optional field
/// take about 170 bytes.
const MAX_ENTRY: usize = 256;

/// Appends `entries` to `encoded`, in a journal's form.
pub fn encode(entries: &[Entry], encoded: &mut Vec<u8>) -> Result<(), postcard::Error> {
    for entry in entries {
        // Into a slice: postcard's writer forms go through a call per byte.
        let start = encoded.len();
        encoded.resize(start + MAX_ENTRY, 0);
        let used = postcard::to_slice(entry, &mut encoded[start..])?.len();
        encoded.truncate(start + used);
    }
    Ok(())
}

/// A read's journal being written: each receive of zeroed entries is one
/// write, and the journal's length is the mark the inbox records before
/// the next receive.
pub struct Writer {
    file: File,
    path: PathBuf,
    step: u64,
    written: u64,
    encoded: Vec<u8>,
    error: Option<JournalError>,
}

impl Writer {
    /// Starts the journal of the read that commits as `step`.
    pub fn create(dir: &Path, step: u64, time: ReadTime) -> Result<Self, JournalError> {
        Ok(Self {
            file: create(dir, step, time)?,
            path: dir.join(name(step, time)),
            step,
            written: HEADER as u64,
            encoded: Vec::new(),
            error: None,
        })
    }

    /// The write that failed, if one did: nothing is written after it.
    pub fn take_error(&mut self) -> Option<JournalError> {
        self.error.take()
    }
}

impl Keep for Writer {
    fn kept_up_to(&self) -> Mark {
        Mark {
            file: self.step,
            offset: self.written,
        }
    }

    /// Stops the read once a write fails: what was zeroed is kept in
    /// memory, the rest waits in the kernel for a read that can keep it.
    fn keep(&mut self, _: Mark, zeroed: &[Entry]) -> ControlFlow<()> {
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        self.encoded.clear();
        let written = encode(zeroed, &mut self.encoded)
            .map_err(|error| JournalError::Corrupt {
                path: self.path.clone(),
                detail: format!("an entry does not encode: {error}"),
            })
            .and_then(|()| {
                self.file
                    .write_all(&self.encoded)
                    .map_err(|source| JournalError::Io {
                        path: self.path.clone(),
                        action: "writing",
                        source,
                    })
            });
        match written {
            Ok(()) => {
                self.written += self.encoded.len() as u64;
                ControlFlow::Continue(())
            }
            Err(error) => {
                self.error = Some(error);
                ControlFlow::Break(())
            }
        }
    }
}

/// Keeps what a killed agent left in its inbox and on its zeroing socket
/// in the journal of its cut read, each entry once: the recovery then
/// meters that journal like any other.
pub struct Recovery {
    dir: PathBuf,
    /// The last step committed: a receive of a read up to it was metered.
    committed: u64,
    /// The step of the read a kill cut short, or the next one.
    step: u64,
    time: ReadTime,
    /// The end of `step`'s journal, once known.
    end: u64,
    /// Entries added to a journal.
    pub appended: u64,
    /// Entries found in the journal already: kept before the kill.
    pub already_kept: u64,
    /// Entries no journal could take, with why: to be metered at once.
    pub unkept: Vec<Entry>,
    /// Why the last entries could not be journaled.
    pub error: Option<JournalError>,
}

impl Recovery {
    /// Recovers into the journal of `step` (made at `time` if the kill left
    /// none), the read after the last commit, `step - 1`.
    pub fn new(dir: &Path, step: u64, time: ReadTime) -> Result<Self, JournalError> {
        let end = match list(dir)?.into_iter().rfind(|journal| journal.step == step) {
            Some(journal) => HEADER as u64 + replay(&journal.path, |_, _| {})?.bytes,
            // Where the journal's entries will start: a kill while they are
            // written leaves them after this mark.
            None => HEADER as u64,
        };
        Ok(Self {
            dir: dir.to_owned(),
            committed: step.saturating_sub(1),
            step,
            time,
            end,
            appended: 0,
            already_kept: 0,
            unkept: Vec::new(),
            error: None,
        })
    }
}

impl Keep for Recovery {
    fn kept_up_to(&self) -> Mark {
        Mark {
            file: self.step,
            offset: self.end,
        }
    }

    fn keep(&mut self, received_at: Mark, zeroed: &[Entry]) -> ControlFlow<()> {
        if received_at.file <= self.committed {
            // Received by a read that committed: metered then.
            self.already_kept += zeroed.len() as u64;
            return ControlFlow::Continue(());
        }
        match append(&self.dir, self.step, self.time, received_at.offset, zeroed) {
            Ok(appended) => {
                self.end = appended.end;
                self.already_kept += appended.skipped;
                let rest = &zeroed[usize::try_from(appended.skipped).unwrap_or(zeroed.len())..];
                match appended.unwritten {
                    None => self.appended += rest.len() as u64,
                    Some(error) => {
                        self.unkept.extend_from_slice(rest);
                        self.error = Some(error);
                    }
                }
            }
            // The journal cannot be read, so its replay will not meter
            // them either.
            Err(error) => {
                self.unkept.extend_from_slice(zeroed);
                self.error = Some(error);
            }
        }
        ControlFlow::Continue(())
    }
}

/// What [`append`] did.
#[derive(Debug)]
pub struct Appended {
    /// Entries the journal held already after the given offset.
    pub skipped: u64,
    /// The journal's length after the append.
    pub end: u64,
    /// Why the entries after the skipped ones could not be written: the
    /// journal was cut back to `end`, so none of them is in it.
    pub unwritten: Option<JournalError>,
}

/// Adds `entries` to the journal of the read that commits as `step`: to
/// the one a kill cut short (after its last whole entry), or to a new one
/// read at `time` if that read left none. `entries` were received when the
/// journal was `after` bytes long: those it holds after that offset already
/// (a kill cut their write short) are not added again. A failed write is
/// [`Appended::unwritten`]; an error is a journal that cannot be read.
pub fn append(
    dir: &Path,
    step: u64,
    time: ReadTime,
    after: u64,
    entries: &[Entry],
) -> Result<Appended, JournalError> {
    let existing = list(dir)?.into_iter().rfind(|journal| journal.step == step);
    let (path, mut file, skipped, end) = match existing {
        Some(journal) => {
            let io = |action, source| JournalError::Io {
                path: journal.path.clone(),
                action,
                source,
            };
            let len = fs::metadata(&journal.path)
                .map_err(|e| io("reading", e))?
                .len();
            if len < HEADER as u64 {
                // Killed before its header was written: nothing in it.
                fs::remove_file(&journal.path).map_err(|e| io("removing", e))?;
                let file = create(dir, step, time)?;
                (dir.join(name(step, time)), file, 0, HEADER as u64)
            } else {
                let mut file = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&journal.path)
                    .map_err(|e| io("opening", e))?;
                let (skipped, end) = if (HEADER as u64..=len).contains(&after) {
                    file.seek(io::SeekFrom::Start(after))
                        .map_err(|e| io("seeking", e))?;
                    let read = read_entries(&mut file, |_| {}).map_err(|e| match e {
                        EntriesError::Io(e) => io("reading", e),
                        EntriesError::Decode { entry, error } => JournalError::Corrupt {
                            path: journal.path.clone(),
                            detail: format!(
                                "entry {entry} after offset {after} does not decode: {error}"
                            ),
                        },
                    })?;
                    (read.entries.min(entries.len() as u64), after + read.bytes)
                } else {
                    (0, HEADER as u64 + replay(&journal.path, |_, _| {})?.bytes)
                };
                file.set_len(end).map_err(|e| io("cutting its tail", e))?;
                file.seek(io::SeekFrom::Start(end))
                    .map_err(|e| io("seeking", e))?;
                (journal.path, file, skipped, end)
            }
        }
        None => {
            let file = create(dir, step, time)?;
            (dir.join(name(step, time)), file, 0, HEADER as u64)
        }
    };
    let rest = &entries[usize::try_from(skipped)
        .unwrap_or(usize::MAX)
        .min(entries.len())..];
    let mut encoded = Vec::new();
    let written = encode(rest, &mut encoded)
        .map_err(|error| JournalError::Corrupt {
            path: path.clone(),
            detail: format!("an entry does not encode: {error}"),
        })
        .and_then(|()| {
            file.write_all(&encoded).map_err(|source| JournalError::Io {
                path: path.clone(),
                action: "writing",
                source,
            })
        });
    Ok(match written {
        Ok(()) => Appended {
            skipped,
            end: end + encoded.len() as u64,
            unwritten: None,
        },
        Err(error) => {
            // A part written would be metered twice: by the journal and by
            // the caller, who meters what is unwritten.
            let cut = file.set_len(end);
            Appended {
                skipped,
                end,
                unwritten: Some(cut.map_or_else(
                    |source| JournalError::Io {
                        path: path.clone(),
                        action: "writing, then cutting back what was written",
                        source,
                    },
                    |()| error,
                )),
            }
        }
    })
}

/// The journals in `dir`, by step.
pub fn list(dir: &Path) -> Result<Vec<Journal>, JournalError> {
    Ok(numbered(dir, "journal-")?
        .into_iter()
        .map(|(step, path)| Journal { step, path })
        .collect())
}

/// Removes the journals of steps up to `step`: their reads committed.
pub fn remove_through(dir: &Path, step: u64) -> Result<(), JournalError> {
    remove_numbered_through(dir, "journal-", step)
}

/// The files in `dir` named `<prefix><number>`, maybe followed by
/// `-<more>`, with their numbers, by number and then name.
pub(super) fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let io = |source| JournalError::Io {
        path: dir.to_owned(),
        action: "listing",
        source,
    };
    let mut found = Vec::new();
    for file in fs::read_dir(dir).map_err(io)? {
        let file = file.map_err(io)?;
        let number = file
            .file_name()
            .to_str()
            .and_then(|name| name.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|number| number.parse().ok());
        if let Some(number) = number {
            found.push((number, file.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Removes the files [`numbered`] finds whose number is at most `last`.
pub(super) fn remove_numbered_through(
    dir: &Path,
    prefix: &str,
    last: u64,
) -> Result<(), JournalError> {
    for (number, path) in numbered(dir, prefix)? {
        if number > last {
            break;
        }
        fs::remove_file(&path).map_err(|source| JournalError::Io {
            path,
            action: "removing",
            source,
        })?;
    }
    Ok(())
}

/// Hands each entry of the journal at `path` to `on_entry`, with its
/// read's time, streaming.
pub fn replay(
    path: &Path,
    mut on_entry: impl FnMut(&Entry, ReadTime),
) -> Result<EntriesRead, JournalError> {
    let io = |action, source| JournalError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let corrupt = |detail: String| JournalError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let mut file = File::open(path).map_err(|e| io("opening", e))?;
    let mut header = [0; HEADER];
    match file.read_exact(&mut header) {
        // Killed between creating the journal and its header's write.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(EntriesRead {
                cut: true,
                ..EntriesRead::default()
            })
        }
        other => other.map_err(|e| io("reading", e))?,
    }
    if &header[..8] != MAGIC {
        return Err(corrupt("no journal header".to_owned()));
    }
    let time = ReadTime {
        observed_at: u32::from_le_bytes(header[8..12].try_into().unwrap_or_default()),
        interval: u32::from_le_bytes(header[12..].try_into().unwrap_or_default()),
    };
    read_entries(&mut file, |entry| on_entry(entry, time)).map_err(|e| match e {
        EntriesError::Io(e) => io("reading", e),
        EntriesError::Decode { entry, error } => {
            corrupt(format!("entry {entry} does not decode: {error}"))
        }
    })
}

/// What [`read_entries`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntriesRead {
    /// Entries handed on.
    pub entries: u64,
    /// Bytes of the entries handed on.
    pub bytes: u64,
    /// The file ends inside an entry: a write cut short, or one still
    /// under way.
    pub cut: bool,
}

/// Why [`read_entries`] stopped early.
#[derive(Debug)]
pub enum EntriesError {
    /// Reading failed.
    Io(io::Error),
    /// Entry number `entry` (from 1) does not decode.
    Decode {
        /// Its number.
        entry: u64,
        /// Why.
        error: postcard::Error,
    },
}

/// Hands each whole entry from `file`'s position to its end to `on_entry`,
/// streaming: memory stays flat in the file's size.
pub fn read_entries(
    file: &mut File,
    mut on_entry: impl FnMut(&Entry),
) -> Result<EntriesRead, EntriesError> {
    let mut read = EntriesRead::default();
    let mut buffer = Vec::with_capacity(CHUNK * 2);
    let mut start = 0;
    let mut at_end = false;
    loop {
        match postcard::take_from_bytes::<Entry>(&buffer[start..]) {
            Ok((entry, rest)) => {
                on_entry(&entry);
                read.entries += 1;
                let next = buffer.len() - rest.len();
                read.bytes += (next - start) as u64;
                start = next;
            }
            Err(postcard::Error::DeserializeUnexpectedEnd) if !at_end => {
                buffer.drain(..start);
                start = 0;
                let before = buffer.len();
                buffer.resize(before + CHUNK, 0);
                let got = read_full(file, &mut buffer[before..]).map_err(EntriesError::Io)?;
                buffer.truncate(before + got);
                at_end = got < CHUNK;
            }
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                read.cut = start < buffer.len();
                return Ok(read);
            }
            Err(error) => {
                return Err(EntriesError::Decode {
                    entry: read.entries + 1,
                    error,
                })
            }
        }
    }
}

/// Reads until `into` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, into: &mut [u8]) -> io::Result<usize> {
    let mut read = 0;
    while read < into.len() {
        match file.read(&mut into[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Counters, Tuple, L4};
    use crate::test_support::TempDir;

    fn entry(i: u16) -> Entry {
        let tuple = Tuple {
            src: if i.is_multiple_of(2) {
                "10.0.0.1".parse().unwrap()
            } else {
                "fd00::1".parse().unwrap()
            },
            dst: "52.0.0.9".parse().unwrap(),
            l4: L4::Ports { src: i, dst: 443 },
        };
        let counters = Counters {
            packets: u64::from(i),
            bytes: u64::from(i) * 1500,
        };
        Entry {
            start_ns: i.is_multiple_of(3).then_some(1_700_000_000_000_000_000),
            ..Entry::tcp(tuple, tuple, Some(counters), Some(counters))
        }
    }

    fn replayed(path: &Path) -> (Vec<Entry>, EntriesRead) {
        let mut entries = Vec::new();
        let time = ReadTime {
            observed_at: 1_700_000_010,
            interval: 10,
        };
        let done = replay(path, |entry, at| {
            assert_eq!(at, time);
            entries.push(*entry);
        })
        .unwrap();
        (entries, done)
    }

    #[test]
    fn a_journal_replays_its_entries_and_stops_at_a_cut_tail() {
        let dir = TempDir::new("journal-replay");
        let time = ReadTime {
            observed_at: 1_700_000_010,
            interval: 10,
        };
        let written: Vec<Entry> = (0..40_000).map(entry).collect();
        let mut file = create(&dir, 7, time).unwrap();
        let mut encoded = Vec::new();
        for batch in written.chunks(256) {
            encoded.clear();
            encode(batch, &mut encoded).unwrap();
            file.write_all(&encoded).unwrap();
        }
        drop(file);
        let path = dir.join(name(7, time));
        assert!(
            fs::metadata(&path).unwrap().len() > 2 * CHUNK as u64,
            "spans chunks"
        );
        let (entries, done) = replayed(&path);
        assert_eq!((entries.len(), done.cut), (written.len(), false));
        assert_eq!(entries, written);

        // Every cut inside the last entry drops that entry, never more.
        let bytes = fs::read(&path).unwrap();
        let mut last = Vec::new();
        encode(&written[written.len() - 1..], &mut last).unwrap();
        for cut in 1..last.len() {
            fs::write(&path, &bytes[..bytes.len() - cut]).unwrap();
            let (entries, done) = replayed(&path);
            assert_eq!(entries, written[..written.len() - 1], "cut {cut}");
            assert!(done.cut);
        }
        // Killed before the header was written.
        fs::write(&path, &bytes[..5]).unwrap();
        assert_eq!(replayed(&path).0, []);
        fs::write(&path, b"TGSPOOL3........").unwrap();
        let err = replay(&path, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("no journal header"), "{err}");
    }

    #[test]
    fn entries_received_again_after_a_kill_are_journaled_once() {
        let dir = TempDir::new("journal-append");
        let time = ReadTime {
            observed_at: 1_700_000_010,
            interval: 10,
        };
        let mut writer = Writer::create(&dir, 7, time).unwrap();
        let first = writer.kept_up_to();
        assert_eq!(first.offset, HEADER as u64);
        assert!(writer.keep(first, &[entry(1)]).is_continue());
        let second = writer.kept_up_to();
        let mut encoded = Vec::new();
        encode(&[entry(2), entry(3), entry(4)], &mut encoded).unwrap();
        let mut cut_first = Vec::new();
        encode(&[entry(2)], &mut cut_first).unwrap();
        // Killed inside the second receive's write, in its second entry.
        writer
            .file
            .write_all(&encoded[..cut_first.len() + 3])
            .unwrap();
        drop(writer);
        let path = dir.join(name(7, time));

        // The inbox gives the second receive again, with its mark.
        let received = [entry(2), entry(3), entry(4)];
        let appended = append(&dir, 7, time, second.offset, &received).unwrap();
        assert_eq!(appended.skipped, 1);
        let (entries, done) = replayed(&path);
        assert_eq!(entries, [entry(1), entry(2), entry(3), entry(4)]);
        assert!(!done.cut);
        assert_eq!(appended.end, fs::metadata(&path).unwrap().len());
        // Killed again after that append: nothing is added twice.
        let again = append(&dir, 7, time, second.offset, &received).unwrap();
        assert_eq!((again.skipped, again.end), (3, appended.end));
        // Answers never received follow, at the journal's end.
        let leftovers = append(&dir, 7, time, again.end, &[entry(5)]).unwrap();
        assert_eq!(leftovers.skipped, 0);
        assert_eq!(replayed(&path).0.len(), 5);

        // A read that left no journal of its step gets one.
        let later = ReadTime {
            observed_at: 1_700_000_020,
            interval: 10,
        };
        append(&dir, 8, later, HEADER as u64, &[entry(5)]).unwrap();
        let mut entries = Vec::new();
        replay(&dir.join(name(8, later)), |entry, at| {
            assert_eq!(at, later);
            entries.push(*entry);
        })
        .unwrap();
        assert_eq!(entries, [entry(5)]);

        // One killed before its header was written is replaced.
        fs::write(dir.join(name(9, time)), b"TGJ").unwrap();
        append(&dir, 9, later, HEADER as u64, &[entry(6)]).unwrap();
        let nines: Vec<Journal> = list(&dir)
            .unwrap()
            .into_iter()
            .filter(|j| j.step == 9)
            .collect();
        assert_eq!(nines.len(), 1);
        assert_eq!(nines[0].path, dir.join(name(9, later)));
    }

    #[test]
    fn a_recovery_journals_what_no_commit_metered_and_only_that() {
        let dir = TempDir::new("journal-recovery");
        let time = ReadTime {
            observed_at: 1_700_000_010,
            interval: 10,
        };
        // Steps up to 4 committed; the kill came before step 5's journal.
        let mut recovery = Recovery::new(&dir, 5, time).unwrap();
        let committed_read = Mark {
            file: 4,
            offset: 900,
        };
        assert!(recovery.keep(committed_read, &[entry(1)]).is_continue());
        assert!(list(&dir).unwrap().is_empty());
        let mark = recovery.kept_up_to();
        assert_eq!(
            mark,
            Mark {
                file: 5,
                offset: HEADER as u64
            }
        );
        let _ = recovery.keep(mark, &[entry(2), entry(3)]);
        let _ = recovery.keep(recovery.kept_up_to(), &[entry(4)]);
        assert_eq!((recovery.appended, recovery.already_kept), (3, 1));
        assert!(recovery.error.is_none());
        assert_eq!(
            replayed(&dir.join(name(5, time))).0,
            [entry(2), entry(3), entry(4)]
        );
    }

    #[test]
    fn the_largest_entry_fits_its_room() {
        let v6 = Tuple {
            src: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            dst: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            l4: L4::Ports {
                src: u16::MAX,
                dst: u16::MAX,
            },
        };
        let most = Counters {
            packets: u64::MAX,
            bytes: u64::MAX,
        };
        let largest = Entry {
            id: u32::MAX,
            zone: u16::MAX,
            mark: u32::MAX,
            status: u32::MAX,
            tcp_state: Some(crate::conntrack::TcpState(u8::MAX)),
            start_ns: Some(u64::MAX),
            stop_ns: Some(u64::MAX),
            ..Entry::tcp(v6, v6, Some(most), Some(most))
        };
        let mut encoded = Vec::new();
        encode(&[largest, largest], &mut encoded).unwrap();
        assert!(encoded.len() / 2 < MAX_ENTRY, "{}", encoded.len());
        let (decoded, rest) = postcard::take_from_bytes::<Entry>(&encoded).unwrap();
        assert_eq!(
            (decoded, postcard::from_bytes::<Entry>(rest).unwrap()),
            (largest, largest)
        );
    }

    #[test]
    fn journals_are_listed_by_step_and_removed_through_a_step() {
        let dir = TempDir::new("journal-list");
        let time = ReadTime {
            observed_at: 1,
            interval: 1,
        };
        for step in [12, 3, 9] {
            create(&dir, step, time).unwrap();
        }
        // A failed commit's journal and the next read's, of one step.
        let later = ReadTime {
            observed_at: 2,
            interval: 1,
        };
        create(&dir, 9, later).unwrap();
        fs::write(dir.join("00000000000000000001.batch"), b"").unwrap();
        let steps = |dir: &Path| {
            list(dir)
                .unwrap()
                .iter()
                .map(|j| j.step)
                .collect::<Vec<_>>()
        };
        assert_eq!(steps(&dir), [3, 9, 9, 12]);
        assert!(list(&dir).unwrap()[2].path.ends_with(name(9, later)));
        remove_through(&dir, 9).unwrap();
        assert_eq!(steps(&dir), [12]);
        assert!(dir.join("00000000000000000001.batch").exists());
    }
}
