//! The guest's side of a raw Xenstore ring: the shared page plus its event
//! channel, as a byte stream (feature `ring`).
//!
//! This is what a guest kernel's xenbus driver does under
//! `/dev/xen/xenbus`, for programs that own the page themselves: unikernels,
//! stub domains, simulators. The page is reached through
//! [`xenstore_proto::ring::RingPage`] (a grant mapping, shared memory, a
//! test buffer) and the event channel through [`EventChannel`].
//!
//! [`RingStream`] implements `Read` and `Write`, so [`crate::Client`] runs
//! over it unchanged:
//!
//! * a read takes what the response ring holds, tells the daemon it made
//!   room, and otherwise waits for the daemon's notification;
//! * a write puts what fits in the request ring, notifies, and waits for
//!   room when it is full;
//! * the daemon's error flag on the page (`error`, set when it gives up on
//!   the connection) and inconsistent indices end the stream with an error;
//! * an optional timeout bounds every wait ([`RingStream::set_timeout`]),
//!   reported as [`io::ErrorKind::TimedOut`].

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};
use xenstore_proto::ring::{self, RingPage};

/// The longest single wait for a notification. Waits are re-checked
/// against the ring's indices at least this often, so a notification that
/// the transport lost costs latency, never a hang.
const POLL: Duration = Duration::from_millis(100);

/// The guest's end of the event channel bound to the daemon's port.
pub trait EventChannel {
    /// Signals the daemon.
    fn notify(&mut self) -> io::Result<()>;
    /// Waits up to `timeout` for the daemon's signal (and unmasks the
    /// port). `Ok(false)` when the time passed without one.
    fn wait(&mut self, timeout: Duration) -> io::Result<bool>;
}

/// A ring page and its event channel as a blocking byte stream.
pub struct RingStream<P, E> {
    page: P,
    evtchn: E,
    timeout: Option<Duration>,
}

impl<P: RingPage, E: EventChannel> RingStream<P, E> {
    /// A stream over `page`, signalled through `evtchn`. Waits are
    /// unbounded until [`RingStream::set_timeout`].
    pub fn new(page: P, evtchn: E) -> RingStream<P, E> {
        RingStream {
            page,
            evtchn,
            timeout: None,
        }
    }

    /// Bounds each blocking read or write (`None`: wait for ever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The shared page.
    pub fn page(&self) -> &P {
        &self.page
    }

    /// The event channel.
    pub fn evtchn(&mut self) -> &mut E {
        &mut self.evtchn
    }

    /// The daemon's error flag (`ring::ERROR_*`; 0 when none).
    pub fn error_flag(&self) -> u32 {
        self.page.load_u32(ring::ERROR)
    }

    /// The features the daemon advertises on the page.
    pub fn server_features(&self) -> u32 {
        self.page.load_u32(ring::SERVER_FEATURES)
    }

    fn check_error(&self) -> io::Result<()> {
        match self.error_flag() {
            ring::ERROR_NONE => Ok(()),
            e => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("xenstored set the ring's error flag ({e})"),
            )),
        }
    }

    /// Waits for a notification, or fails once `deadline` has passed.
    fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let step = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from xenstored on the ring",
                    ));
                }
                left.min(POLL)
            }
            None => POLL,
        };
        self.evtchn.wait(step).map(drop)
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }
}

fn bad_index(e: ring::RingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<P: RingPage, E: EventChannel> Read for RingStream<P, E> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.deadline();
        loop {
            let n = ring::guest_read(&self.page, buf).map_err(bad_index)?;
            if n > 0 {
                // The daemon may be waiting for room to write more.
                self.evtchn.notify()?;
                return Ok(n);
            }
            self.check_error()?;
            self.wait(deadline)?;
        }
    }
}

impl<P: RingPage, E: EventChannel> Write for RingStream<P, E> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.deadline();
        loop {
            self.check_error()?;
            let n = ring::guest_write(&self.page, buf).map_err(bad_index)?;
            if n > 0 {
                self.evtchn.notify()?;
                return Ok(n);
            }
            self.wait(deadline)?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use xenstore_proto::ring::LocalPage;

    /// An event channel that does nothing (the test plays the daemon
    /// between calls).
    #[derive(Default)]
    struct Quiet {
        notified: usize,
    }

    impl EventChannel for Quiet {
        fn notify(&mut self) -> io::Result<()> {
            self.notified += 1;
            Ok(())
        }
        fn wait(&mut self, t: Duration) -> io::Result<bool> {
            std::thread::sleep(t.min(Duration::from_millis(1)));
            Ok(false)
        }
    }

    struct Shared(Arc<LocalPage>);
    impl RingPage for Shared {
        fn load_u32(&self, off: usize) -> u32 {
            self.0.load_u32(off)
        }
        fn store_u32(&self, off: usize, v: u32) {
            self.0.store_u32(off, v)
        }
        fn read_bytes(&self, off: usize, out: &mut [u8]) {
            self.0.read_bytes(off, out)
        }
        fn write_bytes(&self, off: usize, data: &[u8]) {
            self.0.write_bytes(off, data)
        }
    }

    fn stream() -> (Arc<LocalPage>, RingStream<Shared, Quiet>) {
        let page = Arc::new(LocalPage::new());
        let s = RingStream::new(Shared(page.clone()), Quiet::default());
        (page, s)
    }

    #[test]
    fn a_write_fills_the_request_ring_and_notifies() {
        let (page, mut s) = stream();
        assert_eq!(s.write(&[7u8; 1500]).unwrap(), 1024);
        assert_eq!(s.evtchn().notified, 1);
        let mut out = [0u8; 2000];
        assert_eq!(ring::server_read(&*page, &mut out).unwrap(), 1024);
        assert!(out[..1024].iter().all(|&b| b == 7));
    }

    #[test]
    fn a_read_times_out_on_an_empty_ring_then_reads_the_reply() {
        let (page, mut s) = stream();
        s.set_timeout(Some(Duration::from_millis(20)));
        let mut buf = [0u8; 16];
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        ring::server_write(&*page, b"hello").unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
    }

    #[test]
    fn the_error_flag_and_bad_indices_end_the_stream() {
        let (page, mut s) = stream();
        page.store_u32(ring::RSP_PROD, 5000);
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        page.store_u32(ring::RSP_PROD, 0);
        page.store_u32(ring::ERROR, ring::ERROR_PROTO);
        assert_eq!(
            s.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::ConnectionAborted
        );
        assert_eq!(
            s.write(b"x").unwrap_err().kind(),
            io::ErrorKind::ConnectionAborted
        );
    }
}
