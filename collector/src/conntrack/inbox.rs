//! Where received datagrams land: memory backed by a file descriptor (a
//! memfd) that the holder can keep, so that what a receive took out of a
//! socket outlives the process that received it.
//!
//! A zeroing answer leaves the kernel's socket when it is received; until
//! the journal has it, nothing else holds its bytes. `recvmmsg` writes each
//! datagram, and its length, straight into this memory, so there is no
//! instant at which a received answer exists only in the process: a kill
//! between the receive and the journal's write leaves it here. The [`Mark`]
//! written before each receive says where the keeper's copy ended then, so
//! the next agent tells the answers kept from those not ([`Inbox::mark`]).
//!
//! Layout: `TGINBOX1`, the mark (file and offset, u64 native-endian), then
//! [`MANY`] `mmsghdr`s at [`HEADERS_AT`] (the kernel writes each
//! datagram's length into its `msg_len`), then [`MANY`] slots of [`SLOT`]
//! bytes at [`SLOTS_AT`]. A receive clears every length first, so the
//! datagrams of the last receive are the slots up to the first length 0.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::error::ConntrackError;

/// Slots: one per zeroing request of a batch, so a batch's answers leave
/// the socket in one system call.
pub(crate) const MANY: usize = 256;
/// A slot: the kernel builds a single-entry answer in one `NLMSG_GOODSIZE`
/// buffer, at most 8 KiB whatever the page size.
pub(crate) const SLOT: usize = 8 * 1024;

const MAGIC: &[u8; 8] = b"TGINBOX1";
const MARK_AT: usize = 8;
const HEADERS_AT: usize = 64;
const SLOTS_AT: usize = 32 * 1024;
const LEN: usize = SLOTS_AT + MANY * SLOT;
const _: () = assert!(HEADERS_AT + MANY * std::mem::size_of::<libc::mmsghdr>() <= SLOTS_AT);

/// Where the keeper's copy of the received entries ended before a
/// receive: which file it writes (a read's journal, by the read's step, or
/// a generation of the ended connections' files) and that file's length.
/// `Mark::default()` names no file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// The file's number.
    pub file: u64,
    /// Bytes of that file written before the receive.
    pub offset: u64,
}

/// The outcome of one receive into an [`Inbox`].
pub(crate) enum Received {
    /// At least one datagram.
    Datagrams,
    /// The receive timeout passed with nothing to read.
    TimedOut,
    /// `ENOBUFS`: the socket's buffer overflowed and messages were dropped.
    Overrun,
}

/// The memory datagrams are received into, shareable with the holder.
pub(crate) struct Inbox {
    fd: OwnedFd,
    memory: *mut u8,
}

// SAFETY: the mapping is owned by the `Inbox` alone and only reached
// through `&self`/`&mut self`.
#[allow(unsafe_code)]
unsafe impl Send for Inbox {}

impl Inbox {
    /// A new, empty inbox; `name` says what it receives (the memfd's name,
    /// seen in `/proc/PID/fd`).
    #[allow(unsafe_code)]
    pub(crate) fn create(name: &CStr) -> Result<Self, ConntrackError> {
        // SAFETY: a NUL-terminated name and valid flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(ConntrackError::Inbox(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `fd` is an open memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), LEN as libc::off_t) } != 0 {
            return Err(ConntrackError::Inbox(std::io::Error::last_os_error()));
        }
        let inbox = Self::map(fd)?;
        // SAFETY: the mapping is LEN bytes long and MAGIC fits at its start.
        unsafe { std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), inbox.memory, MAGIC.len()) };
        Ok(inbox)
    }

    /// The inbox the holder kept, if it kept one and it can be used, else
    /// a new one named `name`.
    pub(crate) fn kept_or_new(kept: Option<OwnedFd>, name: &CStr) -> Result<Self, ConntrackError> {
        match kept {
            Some(fd) => Self::adopt(fd).or_else(|error| {
                // Refused for good: the holder would hand it again at every
                // start, and the agent must not stop starting over it.
                tracing::error!(%error, "the inbox the holder kept cannot be used: what the killed agent received last is lost");
                Self::create(name)
            }),
            None => Self::create(name),
        }
    }

    /// The inbox of a killed agent, as the holder kept it: the datagrams of
    /// its last receive, and the mark written before it.
    #[allow(unsafe_code)]
    fn adopt(fd: OwnedFd) -> Result<Self, ConntrackError> {
        // SAFETY: an all-zero `stat` is valid; the kernel fills it.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open and `stat` is writable.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(ConntrackError::Inbox(std::io::Error::last_os_error()));
        }
        if usize::try_from(stat.st_size) != Ok(LEN) {
            return Err(not_an_inbox("its size is not an inbox's"));
        }
        let inbox = Self::map(fd)?;
        if inbox.bytes(0, MAGIC.len()) != MAGIC {
            return Err(not_an_inbox("it does not start with an inbox's magic"));
        }
        if inbox.lens().any(|len| len > SLOT) {
            return Err(not_an_inbox("a datagram's length exceeds its slot"));
        }
        Ok(inbox)
    }

    /// Maps the whole inbox, its pages faulted in now: a fault while the
    /// kernel copies a datagram in, with a kill pending, would fail the
    /// copy after the datagram left the socket. (A page swapped out later
    /// faults again; Kubernetes nodes run without swap by default.)
    #[allow(unsafe_code)]
    fn map(fd: OwnedFd) -> Result<Self, ConntrackError> {
        // SAFETY: a new shared mapping of LEN bytes of an open memfd at
        // least that long.
        let memory = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if memory == libc::MAP_FAILED {
            return Err(ConntrackError::Inbox(std::io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            memory: memory.cast(),
        })
    }

    /// The memfd, to give the holder a copy.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// The mark written before the last receive.
    pub(crate) fn mark(&self) -> Mark {
        let word = |at| u64::from_ne_bytes(self.bytes(at, 8).try_into().unwrap_or_default());
        Mark {
            file: word(MARK_AT),
            offset: word(MARK_AT + 8),
        }
    }

    /// Whether the last receive left no datagram.
    pub(crate) fn is_empty(&self) -> bool {
        self.lens().next().is_none()
    }

    /// The datagrams of the last receive, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.lens()
            .enumerate()
            .map(|(slot, len)| self.bytes(SLOTS_AT + slot * SLOT, len.min(SLOT)))
    }

    /// Receives the datagrams queued on `socket` (waiting for the first
    /// unless `flags` say `MSG_DONTWAIT`), up to one per slot: clears the
    /// last receive's, writes `mark`, then receives.
    #[allow(unsafe_code)]
    pub(crate) fn receive(
        &mut self,
        socket: libc::c_int,
        flags: libc::c_int,
        mark: Mark,
    ) -> Result<Received, std::io::Error> {
        let memory = self.memory;
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MANY];
        for (slot, iovec) in iovecs.iter_mut().enumerate() {
            // SAFETY: slot `slot` lies within the mapping.
            iovec.iov_base = unsafe { memory.add(SLOTS_AT + slot * SLOT) }.cast();
            iovec.iov_len = SLOT;
        }
        let headers = self.headers();
        for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
            // SAFETY: all zeroes is a valid `mmsghdr` (null pointers, zero
            // lengths); a zero `msg_len` marks a slot not received into.
            *header = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // The last receive's datagrams are forgotten before the new mark
        // is written: a kill between the two must not pair them with it.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: the mark's 16 bytes lie within the mapping, before the
        // headers.
        unsafe {
            let at = memory.add(MARK_AT);
            std::ptr::copy_nonoverlapping(mark.file.to_ne_bytes().as_ptr(), at, 8);
            std::ptr::copy_nonoverlapping(mark.offset.to_ne_bytes().as_ptr(), at.add(8), 8);
        }
        loop {
            // SAFETY: `headers` holds MANY headers in the mapping, each
            // pointing at one iovec of `iovecs`, each covering one slot of
            // the mapping; all outlive the call.
            let rc = unsafe {
                libc::recvmmsg(
                    socket,
                    headers.as_mut_ptr(),
                    MANY as _,
                    (flags | libc::MSG_TRUNC) as _,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                return Ok(Received::Datagrams);
            }
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    return Ok(Received::TimedOut)
                }
                _ if error.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Received::Overrun),
                _ => return Err(error),
            }
        }
    }

    /// The longest datagram of the last receive, as the kernel reported
    /// it (with `MSG_TRUNC`, beyond its slot if it did not fit).
    pub(crate) fn longest(&self) -> usize {
        self.lens().max().unwrap_or(0)
    }

    /// The lengths of the last receive's datagrams.
    fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MANY)
            .map(|slot| {
                let at = HEADERS_AT + slot * std::mem::size_of::<libc::mmsghdr>();
                let field = at + std::mem::offset_of!(libc::mmsghdr, msg_len);
                u32::from_ne_bytes(self.bytes(field, 4).try_into().unwrap_or_default()) as usize
            })
            .take_while(|&len| len > 0)
    }

    #[allow(unsafe_code)]
    fn headers(&mut self) -> &mut [libc::mmsghdr] {
        // SAFETY: MANY headers fit between HEADERS_AT and SLOTS_AT; the
        // mapping is page-aligned, so HEADERS_AT is aligned for `mmsghdr`;
        // `&mut self` makes the borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.memory.add(HEADERS_AT).cast::<libc::mmsghdr>(),
                MANY,
            )
        }
    }

    #[allow(unsafe_code)]
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= LEN);
        // SAFETY: within the mapping, checked above.
        unsafe { std::slice::from_raw_parts(self.memory.add(at), len) }
    }
}

impl Drop for Inbox {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.memory.cast(), LEN) };
    }
}

fn not_an_inbox(why: &str) -> ConntrackError {
    ConntrackError::Inbox(std::io::Error::other(format!(
        "the inbox the holder kept cannot be used: {why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram socket pair stands in for netlink: one `send` is one
    /// datagram.
    fn pair() -> (
        std::os::unix::net::UnixDatagram,
        std::os::unix::net::UnixDatagram,
    ) {
        std::os::unix::net::UnixDatagram::pair().unwrap()
    }

    #[test]
    fn what_a_receive_took_is_found_by_whoever_holds_the_inbox() {
        let (sender, receiver) = pair();
        let mut inbox = Inbox::create(c"tollgate-test").unwrap();
        assert!(inbox.is_empty());
        sender.send(b"first").unwrap();
        sender.send(b"second answer").unwrap();
        let mark = Mark {
            file: 7,
            offset: 4096,
        };
        let received = inbox
            .receive(receiver.as_raw_fd(), libc::MSG_DONTWAIT, mark)
            .unwrap();
        assert!(matches!(received, Received::Datagrams));
        let copy = inbox.fd().try_clone_to_owned().unwrap();
        drop(inbox);

        let mut adopted = Inbox::adopt(copy).unwrap();
        assert_eq!(adopted.mark(), mark);
        let datagrams: Vec<&[u8]> = adopted.iter().collect();
        assert_eq!(datagrams, [&b"first"[..], b"second answer"]);

        let received = adopted
            .receive(receiver.as_raw_fd(), libc::MSG_DONTWAIT, Mark::default())
            .unwrap();
        assert!(matches!(received, Received::TimedOut));
        assert!(adopted.is_empty(), "a receive clears the one before it");
    }

    #[test]
    fn a_descriptor_that_is_not_an_inbox_is_refused() {
        use std::os::unix::fs::FileExt;
        let inbox = Inbox::create(c"tollgate-test").unwrap();
        let file = std::fs::File::from(inbox.fd().try_clone_to_owned().unwrap());
        file.write_all_at(b"NOTINBOX", 0).unwrap();
        let error = Inbox::adopt(file.try_clone().unwrap().into())
            .err()
            .unwrap();
        assert!(format!("{:?}", error).contains("magic"), "{error:?}");
        file.set_len(100).unwrap();
        let error = Inbox::adopt(file.into()).err().unwrap();
        assert!(format!("{:?}", error).contains("size"), "{error:?}");
    }
}
