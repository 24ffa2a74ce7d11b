//! Keeps the agent's two netlink sockets open across its kills: a second
//! process (`tollgate hold`, a second container of the agent's pod) holds
//! a copy of each, and gives them to the agent that starts next.
//!
//! A socket lives while any process holds it. Without a holder, a SIGKILL
//! or an OOM kill closes both with the agent, and with them two things
//! only the kernel had: the answers to the zeroing requests the agent sent
//! but had not received (their counters already zeroed), and the DESTROY
//! events of the connections that end until a new agent subscribes. With
//! one, the restarted agent reads the zeroing answers into the cut read's
//! journal, and the events that queued while no agent ran are read from
//! the subscription as if it had never stopped.
//!
//! The two talk over a Unix stream socket that only the pod shares. When
//! an agent connects, the holder sends it what it holds (one message, the
//! descriptors as `SCM_RIGHTS`); the agent sends each socket it reads from
//! (one message per socket, again whenever it opens a new one), and keeps
//! the connection open while it lives. A holder left without an agent for
//! `release_after` closes what it holds: a subscription nobody reads
//! would have the kernel keep ended connections waiting for delivery.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conntrack::{EndedConnections, TableReader};

/// What the holder failed at.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// A socket operation failed.
    #[error("holder socket {path}: {action} failed")]
    Io {
        /// The holder's Unix socket.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another holder already serves the socket.
    #[error("another holder already serves {path}")]
    Taken {
        /// The holder's Unix socket.
        path: PathBuf,
    },
    /// The other side sent something that is not this protocol.
    #[error("holder socket {path}: unexpected message: {detail}")]
    Protocol {
        /// The holder's Unix socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// What `action` on the holder's socket at `path` failed with.
fn failed(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> HolderError + use<> {
    let path = path.to_owned();
    move |source| HolderError::Io {
        path,
        action,
        source,
    }
}

/// What a holder keeps, one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The socket zeroing requests are sent on.
    Zeroing,
    /// The subscription to DESTROY events.
    Events,
    /// The memory zeroing answers are received into.
    ZeroingInbox,
    /// The memory DESTROY events are received into.
    EventsInbox,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Zeroing,
        Kind::Events,
        Kind::ZeroingInbox,
        Kind::EventsInbox,
    ];

    fn bit(self) -> u8 {
        match self {
            Kind::Zeroing => 1,
            Kind::Events => 2,
            Kind::ZeroingInbox => 4,
            Kind::EventsInbox => 8,
        }
    }
}

/// What a holder holds, or hands to an agent.
#[derive(Debug, Default)]
pub struct Held {
    /// The zeroing socket, if one is held.
    pub zeroing: Option<OwnedFd>,
    /// The event subscription, if one is held.
    pub events: Option<OwnedFd>,
    /// The zeroing inbox, if one is held.
    pub zeroing_inbox: Option<OwnedFd>,
    /// The events' inbox, if one is held.
    pub events_inbox: Option<OwnedFd>,
}

impl Held {
    fn slot(&mut self, kind: Kind) -> &mut Option<OwnedFd> {
        match kind {
            Kind::Zeroing => &mut self.zeroing,
            Kind::Events => &mut self.events,
            Kind::ZeroingInbox => &mut self.zeroing_inbox,
            Kind::EventsInbox => &mut self.events_inbox,
        }
    }

    fn raw(&self, kind: Kind) -> Option<RawFd> {
        match kind {
            Kind::Zeroing => &self.zeroing,
            Kind::Events => &self.events,
            Kind::ZeroingInbox => &self.zeroing_inbox,
            Kind::EventsInbox => &self.events_inbox,
        }
        .as_ref()
        .map(AsRawFd::as_raw_fd)
    }

    fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|&kind| self.raw(kind).is_none())
    }
}

/// How long an agent waits for a holder that has just started, or that
/// still serves the agent before it, before going on without one.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// How long an agent waits for the first message of a holder that
/// restarted; one that is not serving yet is tried again at the next read.
const RECONNECT_WAIT: Duration = Duration::from_millis(200);

/// An agent's connection to its holder.
#[derive(Debug)]
pub struct Holder {
    stream: UnixStream,
    path: PathBuf,
    /// Copies of the sockets handed over, handed again to a holder that
    /// restarted.
    handed: Held,
    /// Whether the agent already said that the holder is gone.
    said_gone: bool,
}

impl Holder {
    /// Connects to the holder at `path` and takes what it holds: the
    /// sockets of the agent before this one, if it held any.
    pub fn connect(path: &Path) -> Result<(Self, Held), HolderError> {
        Self::connect_within(path, CONNECT_WAIT, CONNECT_WAIT)
    }

    /// Connects, trying again for `retrying` while no holder serves
    /// `path`, and waits up to `answer` for what the holder holds.
    fn connect_within(
        path: &Path,
        retrying: Duration,
        answer: Duration,
    ) -> Result<(Self, Held), HolderError> {
        let deadline = std::time::Instant::now() + retrying;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                // The holder's container starts beside the agent's.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(failed(path, "connecting")(e)),
            }
        };
        stream
            .set_read_timeout(Some(answer))
            .map_err(failed(path, "setting a timeout"))?;
        let (mask, fds) = receive(&stream).map_err(failed(path, "receiving the held sockets"))?;
        let Some(mask) = mask else {
            return Err(HolderError::Protocol {
                path: path.to_owned(),
                detail: "the holder closed the connection".into(),
            });
        };
        let mut held = Held::default();
        let mut fds = fds.into_iter();
        for kind in Kind::ALL {
            if mask & kind.bit() != 0 {
                *held.slot(kind) = Some(fds.next().ok_or_else(|| HolderError::Protocol {
                    path: path.to_owned(),
                    detail: format!("held sockets {mask:#04b} came with too few descriptors"),
                })?);
            }
        }
        Ok((
            Self {
                stream,
                path: path.to_owned(),
                handed: Held::default(),
                said_gone: false,
            },
            held,
        ))
    }

    /// Has the holder keep a copy of `fd`, in place of the socket of that
    /// kind it held.
    pub fn hold(&mut self, kind: Kind, fd: BorrowedFd<'_>) -> Result<(), HolderError> {
        let copy = fd
            .try_clone_to_owned()
            .map_err(failed(&self.path, "copying a socket"))?;
        let fd = self.handed.slot(kind).insert(copy).as_raw_fd();
        self.hand(kind, fd)
    }

    fn hand(&self, kind: Kind, fd: RawFd) -> Result<(), HolderError> {
        send(&self.stream, kind.bit(), &[fd]).map_err(failed(&self.path, "handing a socket over"))
    }

    /// Hands the sockets over again if the holder went away and another
    /// serves its path (its container restarted); says once if none does.
    /// Called at every read, so a restarted holder holds the sockets again
    /// by the next kill.
    pub fn rehand_if_restarted(&mut self) {
        if !closed(&self.stream) {
            return;
        }
        // One attempt: a holder not serving yet is tried at the next read,
        // and a read must not wait for one that is gone.
        match Self::connect_within(&self.path, Duration::ZERO, RECONNECT_WAIT) {
            Ok((holder, _nothing)) => {
                self.stream = holder.stream;
                self.said_gone = false;
                for kind in Kind::ALL {
                    if let Some(fd) = self.handed.raw(kind) {
                        if let Err(error) = self.hand(kind, fd) {
                            tracing::error!(%error, ?kind, "the restarted holder cannot keep this socket");
                            return;
                        }
                    }
                }
                tracing::info!("the holder restarted: it holds the agent's sockets again");
            }
            Err(error) if !self.said_gone => {
                self.said_gone = true;
                tracing::error!(%error, "the holder is gone: a kill of this agent loses what the kernel queued on its sockets, until a holder serves its socket again");
            }
            Err(_) => {}
        }
    }
}

/// Whether the other end of `stream` closed it. The holder never sends
/// after its first message, so anything to read is its end.
#[allow(unsafe_code)]
fn closed(stream: &UnixStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: one byte of room at `byte` for the duration of the call;
    // the fd is owned by `stream`.
    let received = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    received == 0
        || (received < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
}

/// [`Holder::hold`] if there is a holder, saying so if it fails: the agent
/// goes on, and a kill would lose what only that socket held.
pub fn keep(holder: Option<&mut Holder>, kind: Kind, fd: BorrowedFd<'_>) {
    if let Some(holder) = holder {
        if let Err(error) = holder.hold(kind, fd) {
            tracing::error!(%error, ?kind, "the holder cannot keep this socket: a kill would lose what the kernel queued on it");
        }
    }
}

/// Has the holder keep the zeroing socket of `table` and the inbox its
/// answers are received into: together they hold every zeroed entry not
/// yet journaled.
pub fn keep_zeroing(mut holder: Option<&mut Holder>, table: &TableReader) {
    keep(holder.as_deref_mut(), Kind::Zeroing, table.zeroing_socket());
    keep(holder, Kind::ZeroingInbox, table.zeroing_inbox());
}

/// Has the holder keep the subscription `events` and the inbox its events
/// are received into.
pub fn keep_events(mut holder: Option<&mut Holder>, events: &EndedConnections) {
    keep(holder.as_deref_mut(), Kind::Events, events.socket());
    keep(holder, Kind::EventsInbox, events.inbox());
}

/// Serves agents at `path`, one at a time, until killed: each gets what
/// the one before it left; what no agent takes back within
/// `release_after` is closed.
pub fn serve(path: &Path, release_after: Duration) -> Result<(), HolderError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(HolderError::Taken {
                path: path.to_owned(),
            });
        }
        // Left by a holder that was killed.
        std::fs::remove_file(path).map_err(failed(path, "removing a stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(failed(path, "binding"))?;
    tracing::info!(socket = %path.display(), "holding the agent's sockets across its restarts");
    let mut held = Held::default();
    loop {
        let wait = (!held.is_empty()).then_some(release_after);
        if !readable(&listener, wait).map_err(failed(path, "waiting for an agent"))? {
            tracing::warn!(
                seconds = release_after.as_secs(),
                "no agent took its sockets back: closing them; connections that end from now until an agent subscribes are not metered"
            );
            held = Held::default();
            continue;
        }
        let (stream, _) = listener.accept().map_err(failed(path, "accepting"))?;
        match serve_agent(&stream, &mut held) {
            Ok(()) => tracing::info!(
                held_zeroing = held.zeroing.is_some(),
                held_events = held.events.is_some(),
                "the agent is gone; holding its sockets for the next"
            ),
            Err(error) => tracing::warn!(%error, "lost an agent's connection"),
        }
    }
}

/// Hands `held` to the agent on `stream`, then keeps what it sends until
/// it goes.
fn serve_agent(stream: &UnixStream, held: &mut Held) -> io::Result<()> {
    let mut mask = 0;
    let mut fds = Vec::new();
    for kind in Kind::ALL {
        if let Some(fd) = held.slot(kind) {
            mask |= kind.bit();
            fds.push(fd.as_raw_fd());
        }
    }
    send(stream, mask, &fds)?;
    tracing::info!(
        handed_zeroing = held.zeroing.is_some(),
        handed_events = held.events.is_some(),
        handed_zeroing_inbox = held.zeroing_inbox.is_some(),
        handed_events_inbox = held.events_inbox.is_some(),
        "an agent connected"
    );
    loop {
        let (Some(bit), fds) = receive(stream)? else {
            return Ok(());
        };
        let kind = Kind::ALL
            .into_iter()
            .find(|kind| kind.bit() == bit)
            .ok_or_else(|| io::Error::other(format!("unknown socket kind {bit}")))?;
        let mut fds = fds.into_iter();
        let fd = fds
            .next()
            .ok_or_else(|| io::Error::other("a socket handed over without its descriptor"))?;
        *held.slot(kind) = Some(fd);
    }
}

/// Whether `listener` has a connection waiting, within `wait` (forever if
/// `None`).
#[allow(unsafe_code)]
fn readable(listener: &UnixListener, wait: Option<Duration>) -> io::Result<bool> {
    let timeout = wait.map_or(-1, |wait| {
        libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX)
    });
    let mut poll = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid `pollfd` for the duration of the call; the fd
        // is owned by `listener`.
        match unsafe { libc::poll(&mut poll, 1, timeout) } {
            -1 => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            ready => return Ok(ready > 0),
        }
    }
}

/// The most descriptors one message carries.
const MAX_FDS: usize = Kind::ALL.len();

/// Room for `MAX_FDS` descriptors' control message, aligned as `cmsghdr`.
#[repr(C)]
struct Control {
    _align: [libc::cmsghdr; 0],
    bytes: [u8; 64],
}

impl Control {
    fn new() -> Self {
        Self {
            _align: [],
            bytes: [0; 64],
        }
    }
}

/// The one byte a message carries besides its descriptors.
fn one_byte(byte: &mut [u8; 1]) -> libc::iovec {
    libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    }
}

/// Sends the byte `tag` with copies of `fds`.
#[allow(unsafe_code)]
fn send(stream: &UnixStream, tag: u8, fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let mut byte = [tag];
    let mut iov = one_byte(&mut byte);
    let mut control = Control::new();
    let fds_len = std::mem::size_of_val(fds);
    // SAFETY: all-zero is a valid `msghdr`; the pointers set below outlive
    // the call; CMSG_* compute within `control`, which has room for
    // `MAX_FDS` descriptors (CMSG_SPACE(16) is at most 32 bytes).
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        if !fds.is_empty() {
            let fds_len = u32::try_from(fds_len).unwrap_or(u32::MAX);
            message.msg_control = control.bytes.as_mut_ptr().cast();
            message.msg_controllen = libc::CMSG_SPACE(fds_len) as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(fds_len) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                std::mem::size_of_val(fds),
            );
        }
        loop {
            if libc::sendmsg(stream.as_raw_fd(), &message, libc::MSG_NOSIGNAL) == 1 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// Receives one tag byte with the descriptors that came with it; `None`
/// when the other side closed the connection.
#[allow(unsafe_code)]
fn receive(stream: &UnixStream) -> io::Result<(Option<u8>, Vec<OwnedFd>)> {
    let mut byte = [0u8];
    let mut iov = one_byte(&mut byte);
    let mut control = Control::new();
    // SAFETY: as in `send`; the kernel writes at most `msg_controllen`
    // bytes of control data, and each descriptor it passes is new to this
    // process, so owning it is sound.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.bytes.as_mut_ptr().cast();
        message.msg_controllen = control.bytes.len() as _;
        let received = loop {
            let received = libc::recvmsg(stream.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
            if received >= 0 {
                break received;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        };
        let mut fds = Vec::new();
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let len = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = data
                        .add(i * std::mem::size_of::<RawFd>())
                        .cast::<RawFd>()
                        .read_unaligned();
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        if message.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("descriptors were cut off"));
        }
        Ok(((received == 1).then_some(byte[0]), fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    /// A pipe's two ends: bytes written to one come out of whichever
    /// descriptor of the other end reads them.
    fn pipe() -> (std::fs::File, std::fs::File) {
        let (reader, writer) = std::io::pipe().unwrap();
        (
            std::fs::File::from(OwnedFd::from(reader)),
            std::fs::File::from(OwnedFd::from(writer)),
        )
    }

    fn read(fd: Option<OwnedFd>, len: usize) -> String {
        let mut bytes = vec![0; len];
        std::fs::File::from(fd.expect("a held descriptor"))
            .read_exact(&mut bytes)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// A holder serving at a socket in a new directory, from a thread.
    fn serving(name: &str, release_after: Duration) -> (TempDir, PathBuf) {
        let dir = TempDir::new(name);
        let path = dir.join("holder.sock");
        let serving = path.clone();
        std::thread::spawn(move || serve(&serving, release_after));
        (dir, path)
    }

    #[test]
    fn a_restarted_agent_gets_the_sockets_its_predecessor_handed_over() {
        let (_dir, path) = serving("holder", Duration::from_secs(60));

        let (mut holder, held) = Holder::connect(&path).unwrap();
        assert!(held.is_empty());
        let (zeroing, mut zeroing_writer) = pipe();
        let (events, _events_writer) = pipe();
        let (zeroing_inbox, mut zeroing_inbox_writer) = pipe();
        let (events_inbox, mut events_inbox_writer) = pipe();
        holder.hold(Kind::Zeroing, zeroing.as_fd()).unwrap();
        holder.hold(Kind::Events, events.as_fd()).unwrap();
        holder
            .hold(Kind::ZeroingInbox, zeroing_inbox.as_fd())
            .unwrap();
        holder
            .hold(Kind::EventsInbox, events_inbox.as_fd())
            .unwrap();
        // An agent replacing a socket hands over the new one.
        let (replaced, mut replaced_writer) = pipe();
        holder.hold(Kind::Events, replaced.as_fd()).unwrap();
        // A second agent gets nothing while the first lives.
        assert!(matches!(
            Holder::connect_within(
                &path,
                Duration::from_millis(300),
                Duration::from_millis(300)
            ),
            Err(HolderError::Io { .. })
        ));
        // Killed: its own descriptors close with it.
        drop((
            holder,
            zeroing,
            events,
            replaced,
            zeroing_inbox,
            events_inbox,
        ));

        zeroing_writer.write_all(b"answers").unwrap();
        replaced_writer.write_all(b"events").unwrap();
        zeroing_inbox_writer.write_all(b"received").unwrap();
        events_inbox_writer.write_all(b"ended").unwrap();
        // All four come back in one message.
        let (_holder, held) = Holder::connect(&path).unwrap();
        assert_eq!(read(held.zeroing, 7), "answers");
        assert_eq!(read(held.events, 6), "events");
        assert_eq!(read(held.zeroing_inbox, 8), "received");
        assert_eq!(read(held.events_inbox, 5), "ended");
    }

    #[test]
    fn an_agent_hands_its_sockets_again_to_a_holder_that_restarted() {
        let dir = TempDir::new("holder-restarted");
        let path = dir.join("holder.sock");
        // A holder that takes the sockets, then dies.
        let listener = UnixListener::bind(&path).unwrap();
        let accepting = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            send(&stream, 0, &[]).unwrap();
            let (kind, fds) = receive(&stream).unwrap();
            assert_eq!((kind, fds.len()), (Some(Kind::Zeroing.bit()), 1));
        });
        let (mut holder, _) = Holder::connect(&path).unwrap();
        let (zeroing, mut writer) = pipe();
        holder.hold(Kind::Zeroing, zeroing.as_fd()).unwrap();
        accepting.join().unwrap();
        holder.rehand_if_restarted();
        assert!(holder.said_gone, "no holder serves the path");

        std::fs::remove_file(&path).unwrap();
        let serving = path.clone();
        std::thread::spawn(move || serve(&serving, Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(200));
        holder.rehand_if_restarted();
        assert!(!holder.said_gone);
        // Killed: the new holder kept the socket handed again.
        drop((holder, zeroing));
        writer.write_all(b"kept").unwrap();
        let (_next, held) = Holder::connect(&path).unwrap();
        assert_eq!(read(held.zeroing, 4), "kept");
    }

    #[test]
    fn a_second_holder_is_refused_and_a_stale_socket_replaced() {
        let dir = TempDir::new("holder-taken");
        let path = dir.join("holder.sock");
        // A killed holder's socket file.
        drop(UnixListener::bind(&path).unwrap());
        let serving = path.clone();
        std::thread::spawn(move || serve(&serving, Duration::from_secs(60)));
        let (_holder, held) = Holder::connect(&path).unwrap();
        assert!(held.zeroing.is_none() && held.events.is_none());
        assert!(matches!(
            serve(&path, Duration::from_secs(60)),
            Err(HolderError::Taken { .. })
        ));
    }

    #[test]
    fn what_no_agent_takes_back_in_time_is_closed() {
        let (_dir, path) = serving("holder-release", Duration::from_millis(200));
        let (mut holder, _) = Holder::connect(&path).unwrap();
        let (events, mut writer) = pipe();
        holder.hold(Kind::Events, events.as_fd()).unwrap();
        drop((holder, events));
        std::thread::sleep(Duration::from_millis(600));
        // The holder closed the last reading end: writing fails.
        assert_eq!(
            writer.write_all(b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let (_holder, held) = Holder::connect(&path).unwrap();
        assert!(held.zeroing.is_none() && held.events.is_none());
    }
}
