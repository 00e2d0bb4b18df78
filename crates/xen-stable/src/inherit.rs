//! Descriptors handed from one xenstored binary to the next across
//! `exec` (live update): the listening socket, the accepted sockets and
//! the event-channel descriptor ([`crate::libs::Evtchn::keep_across_exec`])
//! are kept open without close-on-exec, and the new process takes them by
//! number from the migration stream (the event channel through
//! `xenevtchn_fdopen`, [`crate::libs::XenLibs::evtchn_inherited`]).

use std::collections::HashSet;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Takes ownership of inherited descriptors, each at most once.
#[derive(Debug, Default)]
pub struct Inherited {
    taken: HashSet<RawFd>,
}

impl Inherited {
    /// Nothing taken yet.
    pub fn new() -> Inherited {
        Inherited::default()
    }

    /// Takes descriptor `fd`, which the previous binary left open: it must
    /// be open, above the standard three, and not taken before.
    pub fn take(&mut self, fd: RawFd) -> io::Result<OwnedFd> {
        if fd < 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} is not one a live update hands over"),
            ));
        }
        if self.taken.contains(&fd) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} named twice"),
            ));
        }
        // SAFETY: the borrow lives only for the fcntl below, which checks
        // that `fd` is open; nothing is done with it if it is not.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_getfd(borrowed).map_err(io::Error::from)?;
        self.taken.insert(fd);
        // SAFETY: `fd` is open (checked above), was left to this process
        // by the binary before the exec, and is taken at most once by this
        // `Inherited` (the set above), which the daemon keeps as the only
        // taker of handed-over descriptors: no other owner exists.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Keeps descriptor `fd` open across the next `exec` (clears
/// close-on-exec). The caller owns `fd` and keeps it open for the call.
pub fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    set_cloexec(fd, false)
}

/// Closes descriptor `fd` at the next `exec` again (a live update that
/// failed, or a descriptor just taken over). The caller owns `fd` and
/// keeps it open for the call.
pub fn close_on_exec(fd: RawFd) -> io::Result<()> {
    set_cloexec(fd, true)
}

/// Sets or clears `O_NONBLOCK` on descriptor `fd` (a hand-back to C
/// xenstored gives it its sockets blocking, as it made them). The caller
/// owns `fd` and keeps it open for the call.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: the borrow lasts for the two fcntl calls only, and the
    // caller owns `fd` and keeps it open meanwhile (the function's rule);
    // a descriptor that is not open gives EBADF, nothing else.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::fs::fcntl_getfl(b).map_err(io::Error::from)?;
    let flags = if on {
        flags | rustix::fs::OFlags::NONBLOCK
    } else {
        flags - rustix::fs::OFlags::NONBLOCK
    };
    rustix::fs::fcntl_setfl(b, flags).map_err(io::Error::from)
}

/// Whether descriptor `fd` is open in this process (checked before a
/// take-over touches anything: a state naming a closed descriptor is
/// refused while the recovery can still run the binary before).
pub fn is_open(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    // SAFETY: the borrow lasts for one fcntl(F_GETFD) call, which only
    // reads the descriptor's flags; a descriptor that is not open gives
    // EBADF, nothing else, and nothing takes ownership of it here.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(b).is_ok()
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: the borrow lasts for the two fcntl calls only, and the
    // caller owns `fd` and keeps it open meanwhile (the functions' rule);
    // a descriptor that is not open gives EBADF, nothing else.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::io::fcntl_getfd(b).map_err(io::Error::from)?;
    let flags = if on {
        flags | rustix::io::FdFlags::CLOEXEC
    } else {
        flags - rustix::io::FdFlags::CLOEXEC
    };
    rustix::io::fcntl_setfd(b, flags).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn descriptors_are_taken_once_and_only_when_open() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd: OwnedFd = a.into();
        let raw = fd.as_raw_fd();
        keep_across_exec(raw).unwrap();
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(!flags.contains(rustix::io::FdFlags::CLOEXEC));
        close_on_exec(raw).unwrap();
        assert!(rustix::io::fcntl_getfd(&fd)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC));
        // Hand the descriptor over to an `Inherited`, as an exec would.
        std::mem::forget(fd);
        let mut inh = Inherited::new();
        let owned = inh.take(raw).expect("open");
        assert!(inh.take(raw).is_err(), "twice");
        assert!(inh.take(1).is_err(), "standard descriptors");
        drop(owned);
        let mut other = Inherited::new();
        assert!(other.take(raw).is_err(), "closed");
    }
}
