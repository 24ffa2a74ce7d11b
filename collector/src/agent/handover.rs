//! Taking over from the agent this one replaces on its node (an
//! overlapping restart, a DaemonSet update with surge) without a gap: the
//! new agent subscribes to ended connections before the old one stops,
//! queues them in `handover/` in the spool directory, and once it holds the
//! spool meters those the old one did not.
//!
//! While both run, both receive every connection that ends. The old one
//! meters its own, and keeps its ended-connection files while a successor
//! waits (`handover/lock` held), so the new one can tell which of its own
//! to skip: one event delivered to two sockets decodes to the same entry,
//! nanosecond timestamps included. After the old one exits, the new one
//! moves its listener into the spool, meters `handover/` minus the old
//! one's files, commits, and removes `handover/`. `handover/adopted-into`
//! names the listener's first generation in the spool: a commit at or past
//! it covered `handover/`, so an agent killed between that commit and the
//! removal does not have it metered twice.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::ended::{self, Position};
use super::journal::JournalError;
use crate::conntrack::Entry;
use crate::sink::spool;

/// The directory, in the spool directory.
pub const DIR: &str = "handover";
/// Held by the successor while it waits (the spool's own lock file name).
const LOCK: &str = "lock";
/// The generation from which the listener wrote in the spool.
const ADOPTED_INTO: &str = "adopted-into";

/// What went wrong handing over.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// A file operation failed.
    #[error("handover {path}: {action} failed")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another agent already waits to take over.
    #[error("another agent already waits to take over this node's spool ({path} is locked)")]
    AnotherWaiting {
        /// The handover directory.
        path: PathBuf,
    },
    /// The queues could not be read or moved.
    #[error(transparent)]
    Queue(#[from] JournalError),
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> HandoverError + use<> {
    let path = path.to_owned();
    move |source| HandoverError::Io {
        path,
        action,
        source,
    }
}

/// A successor waiting for the spool: `handover/`, locked while it lives.
#[derive(Debug)]
pub struct Waiting {
    dir: PathBuf,
    _lock: File,
}

impl Waiting {
    /// Where its listener queues ended connections until it takes over.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Says that a successor waits for the spool in `spool`: `handover/`,
/// built under another name with its lock held and then renamed, so the
/// running agent never sees it unlocked while the successor lives. A
/// `handover/` nobody holds is waited out: the agent holding the spool
/// takes it over at its start, or removes it at its next commit (a
/// successor that died while it ran).
pub fn announce(spool: &Path) -> Result<Waiting, HandoverError> {
    let dir = spool.join(DIR);
    while dir.exists() {
        if spool::held_elsewhere(&dir) {
            return Err(HandoverError::AnotherWaiting { path: dir });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let building = spool.join(format!("{DIR}.{}", std::process::id()));
    if building.exists() {
        fs::remove_dir_all(&building).map_err(io(&building, "removing"))?;
    }
    fs::create_dir(&building).map_err(io(&building, "creating"))?;
    let lock_path = building.join(LOCK);
    let lock = File::create(&lock_path).map_err(io(&lock_path, "creating"))?;
    lock.try_lock()
        .map_err(|e| io(&lock_path, "locking")(e.into()))?;
    fs::rename(&building, &dir).map_err(io(&dir, "creating"))?;
    Ok(Waiting { dir, _lock: lock })
}

/// Removes `dir` as one step: renamed away first, so a kill part-way
/// never leaves a `handover/` with some of its files.
fn remove(dir: &Path) -> io::Result<()> {
    let gone = dir.with_file_name(format!("{DIR}.removed"));
    if gone.exists() {
        fs::remove_dir_all(&gone)?;
    }
    fs::rename(dir, &gone)?;
    fs::remove_dir_all(&gone)
}

/// Whether a successor waits for the spool in `spool`: the running agent
/// then keeps its ended-connection files for it. A `handover/` nobody
/// holds is a successor that died, and goes.
pub fn successor_waiting(spool: &Path) -> bool {
    let dir = spool.join(DIR);
    if !dir.exists() {
        return false;
    }
    if spool::held_elsewhere(&dir) {
        return true;
    }
    tracing::warn!(dir = %dir.display(), "an agent that waited to take over is gone; removing its queue");
    match remove(&dir) {
        Ok(()) => false,
        Err(error) => {
            // Kept, and so are this agent's files, for whoever takes it over.
            tracing::error!(%error, dir = %dir.display(), "cannot remove a dead successor's queue");
            true
        }
    }
}

/// A `handover/` being taken over, locked until a commit covers it and it
/// is removed.
#[derive(Debug)]
pub struct TakenOver {
    dir: PathBuf,
    _lock: File,
    /// Entries in `handover/`.
    pub entries: u64,
    /// Of `entries`, those the old agent had received, and metered.
    pub skipped: u64,
}

impl TakenOver {
    /// Removes `handover/`: the commit covering it is made.
    pub fn finish(self) {
        if let Err(error) = remove(&self.dir) {
            tracing::error!(%error, dir = %self.dir.display(), "cannot remove the handover queue; the next start removes it");
        }
    }
}

/// Takes over `handover/` in `spool`, if there is one, at this agent's
/// start, once it holds the spool: if it was `waiting`, moves its listener
/// into the spool (`move_listener`, returning the listener's generation
/// there); then hands `meter` each entry of `handover/` that the spool's
/// ended-connection files (the old agent's) do not hold, unless the last
/// commit (`committed`) already covered it.
pub fn take_over(
    spool: &Path,
    committed: Position,
    waiting: Option<Waiting>,
    move_listener: impl FnOnce() -> Result<u64, JournalError>,
    mut meter: impl FnMut(&Entry),
) -> Result<Option<TakenOver>, HandoverError> {
    let dir = spool.join(DIR);
    let adopted_path = dir.join(ADOPTED_INTO);
    let (lock, adopted_into) = match waiting {
        Some(waiting) => {
            let generation = move_listener()?;
            write_synced(&adopted_path, generation)?;
            (waiting._lock, Some(generation))
        }
        // Left by an agent killed while taking over, or by a successor
        // that died while this node had no agent.
        None => {
            let lock_path = dir.join(LOCK);
            let lock = match File::open(&lock_path) {
                Ok(lock) => lock,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(&lock_path, "opening")(e)),
            };
            match lock.try_lock() {
                Ok(()) => {}
                // A successor waits for this agent: its queue is its own.
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path, "locking")(e)),
            }
            (lock, read_generation(&adopted_path)?)
        }
    };
    let mut taken = TakenOver {
        dir,
        _lock: lock,
        entries: 0,
        skipped: 0,
    };
    if adopted_into.is_some_and(|generation| committed.generation >= generation) {
        return Ok(Some(taken));
    }
    let mut old = HashSet::new();
    ended::read_all(spool, adopted_into.unwrap_or(u64::MAX), |entry| {
        old.insert(*entry);
    })?;
    ended::read_all(&taken.dir, u64::MAX, |entry| {
        taken.entries += 1;
        if old.contains(entry) {
            taken.skipped += 1;
        } else {
            meter(entry);
        }
    })?;
    Ok(Some(taken))
}

fn write_synced(path: &Path, generation: u64) -> Result<(), HandoverError> {
    let mut file = File::create(path).map_err(io(path, "creating"))?;
    file.write_all(format!("{generation}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(path, "writing"))
}

fn read_generation(path: &Path) -> Result<Option<u64>, HandoverError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, "reading")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ended, TempDir};

    /// The ports of the entries `take_over` hands on, and what it says.
    fn take(
        spool: &Path,
        committed: Position,
        waiting: Option<Waiting>,
        writer: &mut ended::Writer,
    ) -> (Vec<u16>, Option<TakenOver>) {
        let mut ports = Vec::new();
        let taken = take_over(
            spool,
            committed,
            waiting,
            || writer.move_to(spool),
            |entry| ports.push(entry.orig.l4.ports().unwrap().0),
        )
        .unwrap();
        (ports, taken)
    }

    #[test]
    fn connections_both_agents_received_are_metered_once() {
        let spool = TempDir::new("handover");
        // The old agent's queue: 1 and 2 ended before the successor
        // subscribed, 3 and 4 while both ran.
        let mut old = ended::Writer::create(&spool).unwrap();
        old.append(&[ended(1), ended(2)]).unwrap();
        assert!(!successor_waiting(&spool));
        let waiting = announce(&spool).unwrap();
        assert!(
            successor_waiting(&spool),
            "a live successor keeps its queue"
        );
        assert!(matches!(
            announce(&spool),
            Err(HandoverError::AnotherWaiting { .. })
        ));
        let mut new = ended::Writer::create(waiting.dir()).unwrap();
        old.append(&[ended(3), ended(4)]).unwrap();
        // 5 ended after the old agent stopped listening.
        new.append(&[ended(3), ended(4), ended(5)]).unwrap();
        drop(old);
        let committed = Position {
            generation: 1,
            offset: 0,
        };
        let (ports, taken) = take(&spool, committed, Some(waiting), &mut new);
        assert_eq!(ports, [5]);
        let taken = taken.unwrap();
        assert_eq!((taken.entries, taken.skipped), (3, 2));
        // The listener goes on in the spool, after the old agent's files.
        new.append(&[ended(6)]).unwrap();
        let mut queue = ended::Queue::new(&spool, committed);
        let mut queued = Vec::new();
        queue
            .drain(|entry| queued.push(entry.orig.l4.ports().unwrap().0))
            .unwrap();
        assert_eq!(queued, [1, 2, 3, 4, 6]);

        // Killed before the commit: the next start takes over again, the
        // same way.
        drop(taken);
        let (ports, taken) = take(&spool, committed, None, &mut new);
        assert_eq!(ports, [5]);
        // Killed after it: nothing again.
        drop(taken);
        let (ports, taken) = take(&spool, queue.position(), None, &mut new);
        assert!(ports.is_empty());
        taken.unwrap().finish();
        assert!(!spool.join(DIR).exists());
        let (ports, taken) = take(&spool, queue.position(), None, &mut new);
        assert!(ports.is_empty() && taken.is_none());
    }

    #[test]
    fn a_successor_that_died_waiting_is_removed_by_the_running_agent() {
        let spool = TempDir::new("handover-dead");
        let waiting = announce(&spool).unwrap();
        ended::Writer::create(waiting.dir())
            .unwrap()
            .append(&[ended(1)])
            .unwrap();
        drop(waiting);
        assert!(!successor_waiting(&spool));
        assert!(!spool.join(DIR).exists());
    }
}
