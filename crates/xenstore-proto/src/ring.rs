//! The xenstore ring page (`struct xenstore_domain_interface`): two
//! 1024-byte byte rings with free-running 32-bit indices, plus the feature,
//! connection-state, error and event-channel fields.
//!
//! The logic here is written against [`RingPage`], an accessor that reads
//! or writes the shared page one field or one byte range at a time, so it
//! works the same over a real grant mapping, a simulator's shared memory or
//! a test buffer. Every index is loaded exactly once per operation and
//! validated (`prod - cons <= 1024`) before any data is touched; offsets are
//! always masked; data is copied into private buffers before anyone parses
//! it. A bad index is reported as [`RingError::BadIndex`] and nothing is
//! read or written.

use std::sync::atomic::{fence, AtomicU8, Ordering};

/// Size of each byte ring.
pub const RING_SIZE: u32 = 1024;
/// Offset of the request ring (guest to server).
pub const REQ: usize = 0;
/// Offset of the response ring (server to guest).
pub const RSP: usize = 1024;
/// Offset of `req_cons` (written by the server).
pub const REQ_CONS: usize = 2048;
/// Offset of `req_prod` (written by the guest).
pub const REQ_PROD: usize = 2052;
/// Offset of `rsp_cons` (written by the guest).
pub const RSP_CONS: usize = 2056;
/// Offset of `rsp_prod` (written by the server).
pub const RSP_PROD: usize = 2060;
/// Offset of `server_features` (written by the server only).
pub const SERVER_FEATURES: usize = 2064;
/// Offset of `connection` (guest sets 1, server sets 0).
pub const CONNECTION: usize = 2068;
/// Offset of `error` (written by the server).
pub const ERROR: usize = 2072;
/// Offset of `evtchn_port` (filled by Xen for dom0less guests; 4.21+).
pub const EVTCHN_PORT: usize = 2076;
/// Size of a page.
pub const PAGE_SIZE: usize = 4096;

/// `connection`: normal operation.
pub const CONNECTED: u32 = 0;
/// `connection`: the guest asks for a reconnection.
pub const RECONNECT: u32 = 1;

/// `error`: none.
pub const ERROR_NONE: u32 = 0;
/// `error`: the event channel is unusable.
pub const ERROR_COMM: u32 = 1;
/// `error`: inconsistent ring indices.
pub const ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation (header length over 4096).
pub const ERROR_PROTO: u32 = 3;

/// Access to one shared ring page. Implementations treat the memory as
/// modified concurrently by the peer: each call is one access, and nothing
/// may be assumed stable between calls. Offsets passed by this module are
/// always within the page.
pub trait RingPage {
    /// Loads the `u32` field at `off` (one access, native byte order).
    fn load_u32(&self, off: usize) -> u32;
    /// Stores the `u32` field at `off`.
    fn store_u32(&self, off: usize, v: u32);
    /// Copies `out.len()` bytes starting at `off` out of the page.
    fn read_bytes(&self, off: usize, out: &mut [u8]);
    /// Copies `data` into the page starting at `off`.
    fn write_bytes(&self, off: usize, data: &[u8]);
}

/// The ring indices are inconsistent: `prod - cons > 1024`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Producer and consumer index more than a ring apart.
    #[error("inconsistent ring indices (cons {cons}, prod {prod})")]
    BadIndex {
        /// The consumer index read.
        cons: u32,
        /// The producer index read.
        prod: u32,
    },
}

/// Full memory barrier (`xen_mb()`).
pub fn barrier() {
    fence(Ordering::SeqCst);
}

fn in_flight(cons: u32, prod: u32) -> Result<u32, RingError> {
    let n = prod.wrapping_sub(cons);
    if n > RING_SIZE {
        Err(RingError::BadIndex { cons, prod })
    } else {
        Ok(n)
    }
}

/// Consumes up to `out.len()` bytes from the ring at `data` whose indices
/// are at `cons_off` (ours) and `prod_off` (the peer's).
fn consume<P: RingPage + ?Sized>(
    page: &P,
    data: usize,
    cons_off: usize,
    prod_off: usize,
    out: &mut [u8],
) -> Result<usize, RingError> {
    // Our last index store must be visible before the peer's index is
    // read: the peer stores its index, then reads ours to decide whether
    // to notify (Linux's xb_write notifies only if we had consumed
    // everything), so without this full barrier both sides could read the
    // other's old index, each conclude the other will act, and the ring
    // stall with input in it.
    barrier();
    let cons = page.load_u32(cons_off);
    let prod = page.load_u32(prod_off);
    barrier();
    let avail = in_flight(cons, prod)? as usize;
    let n = avail.min(out.len());
    if n == 0 {
        return Ok(0);
    }
    let start = (cons & (RING_SIZE - 1)) as usize;
    let first = n.min(RING_SIZE as usize - start);
    page.read_bytes(data + start, &mut out[..first]);
    if n > first {
        page.read_bytes(data, &mut out[first..n]);
    }
    barrier();
    page.store_u32(cons_off, cons.wrapping_add(n as u32));
    Ok(n)
}

/// Produces up to `src.len()` bytes into the ring at `data` whose indices
/// are at `prod_off` (ours) and `cons_off` (the peer's).
fn produce<P: RingPage + ?Sized>(
    page: &P,
    data: usize,
    prod_off: usize,
    cons_off: usize,
    src: &[u8],
) -> Result<usize, RingError> {
    // As in `consume`: our last index store before the peer's load.
    barrier();
    let cons = page.load_u32(cons_off);
    let prod = page.load_u32(prod_off);
    barrier();
    let used = in_flight(cons, prod)?;
    let n = ((RING_SIZE - used) as usize).min(src.len());
    if n == 0 {
        return Ok(0);
    }
    let start = (prod & (RING_SIZE - 1)) as usize;
    let first = n.min(RING_SIZE as usize - start);
    page.write_bytes(data + start, &src[..first]);
    if n > first {
        page.write_bytes(data, &src[first..n]);
    }
    barrier();
    page.store_u32(prod_off, prod.wrapping_add(n as u32));
    Ok(n)
}

/// Server side: reads requests the guest produced.
pub fn server_read<P: RingPage + ?Sized>(page: &P, out: &mut [u8]) -> Result<usize, RingError> {
    consume(page, REQ, REQ_CONS, REQ_PROD, out)
}

/// Server side: writes replies and events for the guest.
pub fn server_write<P: RingPage + ?Sized>(page: &P, src: &[u8]) -> Result<usize, RingError> {
    produce(page, RSP, RSP_PROD, RSP_CONS, src)
}

/// Guest side: writes requests.
pub fn guest_write<P: RingPage + ?Sized>(page: &P, src: &[u8]) -> Result<usize, RingError> {
    produce(page, REQ, REQ_PROD, REQ_CONS, src)
}

/// Guest side: reads replies and events.
pub fn guest_read<P: RingPage + ?Sized>(page: &P, out: &mut [u8]) -> Result<usize, RingError> {
    consume(page, RSP, RSP_CONS, RSP_PROD, out)
}

/// A cheap hint (no barrier) that the guest has produced requests.
pub fn server_has_input<P: RingPage + ?Sized>(page: &P) -> bool {
    page.load_u32(REQ_CONS) != page.load_u32(REQ_PROD)
}

/// A cheap hint (no barrier) that the response ring has room.
pub fn server_has_room<P: RingPage + ?Sized>(page: &P) -> bool {
    page.load_u32(RSP_PROD)
        .wrapping_sub(page.load_u32(RSP_CONS))
        < RING_SIZE
}

/// Resets all four indices to 0 (C xenstored does this on INTRODUCE).
pub fn reset_indices<P: RingPage + ?Sized>(page: &P) {
    for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
        page.store_u32(off, 0);
    }
    barrier();
}

/// A page in ordinary process memory, for tests and for simulators that
/// share it between threads. All accesses are atomic bytes, so concurrent
/// use from several threads is defined behaviour.
pub struct LocalPage {
    bytes: Box<[AtomicU8]>,
}

impl Default for LocalPage {
    fn default() -> Self {
        LocalPage {
            bytes: (0..PAGE_SIZE).map(|_| AtomicU8::new(0)).collect(),
        }
    }
}

impl LocalPage {
    /// A zeroed page.
    pub fn new() -> LocalPage {
        LocalPage::default()
    }
}

impl RingPage for LocalPage {
    fn load_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read_bytes(off, &mut b);
        u32::from_ne_bytes(b)
    }

    fn store_u32(&self, off: usize, v: u32) {
        self.write_bytes(off, &v.to_ne_bytes());
    }

    fn read_bytes(&self, off: usize, out: &mut [u8]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self
                .bytes
                .get(off + i)
                .map_or(0, |b| b.load(Ordering::Relaxed));
        }
    }

    fn write_bytes(&self, off: usize, data: &[u8]) {
        for (i, d) in data.iter().enumerate() {
            if let Some(b) = self.bytes.get(off + i) {
                b.store(*d, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_across_the_wrap() {
        let p = LocalPage::new();
        // Start near the end of the index space and of the ring.
        for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
            p.store_u32(off, u32::MAX - 9);
        }
        let msg: Vec<u8> = (0..100u8).collect();
        assert_eq!(guest_write(&p, &msg), Ok(100));
        let mut out = [0u8; 200];
        assert_eq!(server_read(&p, &mut out), Ok(100));
        assert_eq!(&out[..100], &msg[..]);
        assert_eq!(server_read(&p, &mut out), Ok(0));
        assert_eq!(server_write(&p, &msg), Ok(100));
        assert_eq!(guest_read(&p, &mut out), Ok(100));
        assert_eq!(&out[..100], &msg[..]);
    }

    #[test]
    fn full_ring_takes_no_more() {
        let p = LocalPage::new();
        assert_eq!(server_write(&p, &[7u8; 1500]), Ok(1024));
        assert_eq!(server_write(&p, &[7u8; 10]), Ok(0));
        let mut out = [0u8; 24];
        assert_eq!(guest_read(&p, &mut out), Ok(24));
        assert_eq!(server_write(&p, &[7u8; 100]), Ok(24));
    }

    #[test]
    fn bad_indices_touch_nothing() {
        let p = LocalPage::new();
        p.store_u32(REQ_PROD, 5000);
        let mut out = [0u8; 16];
        assert_eq!(
            server_read(&p, &mut out),
            Err(RingError::BadIndex {
                cons: 0,
                prod: 5000
            })
        );
        assert_eq!(p.load_u32(REQ_CONS), 0);
        // rsp_cons ahead of rsp_prod: also inconsistent.
        p.store_u32(RSP_CONS, 10);
        assert!(server_write(&p, b"x").is_err());
        assert_eq!(p.load_u32(RSP_PROD), 0);
    }

    #[test]
    fn reset() {
        let p = LocalPage::new();
        guest_write(&p, b"abc").unwrap();
        assert!(server_has_input(&p));
        reset_indices(&p);
        assert!(!server_has_input(&p));
    }
}
