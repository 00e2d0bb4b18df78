//! The ring reader and writer against a hostile peer: a page with
//! arbitrary indices and contents, server reads and writes interleaved
//! with arbitrary guest moves (index scribbles, data writes, reads), and
//! what the server reads fed to the decoder.
//!
//! Checked on every server call, against a model of the page:
//! * inconsistent indices (`prod - cons > 1024`) are refused and nothing
//!   is read or written;
//! * otherwise exactly `min(in flight, asked)` bytes move, they are the
//!   bytes between the indices (in ring order), and only they are touched;
//! * only our own index is stored, to `old + moved`;
//! * the decoder never yields a payload over `PAYLOAD_MAX` nor bytes that
//!   were not read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use xenstore_proto::ring::{self, RingPage, PAGE_SIZE, RING_SIZE};
use xenstore_proto::{Decoder, HEADER_SIZE, PAYLOAD_MAX};

/// A page in a byte array that records every access.
struct Page {
    mem: RefCell<Vec<u8>>,
    /// (offset, len) of each byte-range read, field loads included.
    reads: RefCell<Vec<(usize, usize)>>,
    /// (offset, len) of each write, field stores included.
    writes: RefCell<Vec<(usize, usize)>>,
}

impl Page {
    fn new() -> Page {
        Page {
            mem: RefCell::new(vec![0; PAGE_SIZE]),
            reads: RefCell::new(Vec::new()),
            writes: RefCell::new(Vec::new()),
        }
    }

    fn forget(&self) {
        self.reads.borrow_mut().clear();
        self.writes.borrow_mut().clear();
    }

    fn raw_u32(&self, off: usize) -> u32 {
        let m = self.mem.borrow();
        u32::from_ne_bytes([m[off], m[off + 1], m[off + 2], m[off + 3]])
    }

    fn set_u32(&self, off: usize, v: u32) {
        self.mem.borrow_mut()[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
}

impl RingPage for Page {
    fn load_u32(&self, off: usize) -> u32 {
        assert!(off + 4 <= PAGE_SIZE, "load past the page at {off}");
        self.reads.borrow_mut().push((off, 4));
        self.raw_u32(off)
    }

    fn store_u32(&self, off: usize, v: u32) {
        assert!(off + 4 <= PAGE_SIZE, "store past the page at {off}");
        self.writes.borrow_mut().push((off, 4));
        self.set_u32(off, v);
    }

    fn read_bytes(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= PAGE_SIZE, "read past the page");
        self.reads.borrow_mut().push((off, out.len()));
        out.copy_from_slice(&self.mem.borrow()[off..off + out.len()]);
    }

    fn write_bytes(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= PAGE_SIZE, "write past the page");
        self.writes.borrow_mut().push((off, data.len()));
        self.mem.borrow_mut()[off..off + data.len()].copy_from_slice(data);
    }
}

/// The input, consumed from the front.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.byte().unwrap_or(0)) | (u16::from(self.byte().unwrap_or(0)) << 8)
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

/// Ring positions `cons..cons + n` (masked), as page offsets from `data`.
fn positions(data: usize, cons: u32, n: usize) -> Vec<usize> {
    (0..n as u32)
        .map(|i| data + (cons.wrapping_add(i) & (RING_SIZE - 1)) as usize)
        .collect()
}

/// Every byte offset the recorded accesses covered.
fn covered(acc: &[(usize, usize)]) -> Vec<usize> {
    let mut v: Vec<usize> = acc.iter().flat_map(|&(o, l)| o..o + l).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn field(off: usize) -> std::ops::Range<usize> {
    off..off + 4
}

/// One server-side consume (`server_read`) or produce (`server_write`),
/// checked against the page before and after.
fn check_server(
    page: &Page,
    read: bool,
    n: usize,
    src: &[u8],
    decoder: &mut Decoder,
    fed: &mut usize,
) {
    let (data, ours, theirs) = if read {
        (ring::REQ, ring::REQ_CONS, ring::REQ_PROD)
    } else {
        (ring::RSP, ring::RSP_PROD, ring::RSP_CONS)
    };
    let before = page.mem.borrow().clone();
    let (mine, peer) = (page.raw_u32(ours), page.raw_u32(theirs));
    // In flight: for a read, prod - cons with prod the peer's; for a write,
    // prod - cons with prod ours.
    let used = if read {
        peer.wrapping_sub(mine)
    } else {
        mine.wrapping_sub(peer)
    };
    page.forget();
    let mut out = vec![0u8; n];
    let r = if read {
        ring::server_read(page, &mut out)
    } else {
        ring::server_write(page, src)
    };
    let reads = covered(&page.reads.borrow());
    let writes = covered(&page.writes.borrow());
    let after = page.mem.borrow().clone();
    // Index fields may always be loaded.
    let index_fields: Vec<usize> = field(ours).chain(field(theirs)).collect();
    if used > RING_SIZE {
        assert!(
            r.is_err(),
            "bad indices accepted: {mine} {peer} read={read}"
        );
        assert!(writes.is_empty(), "bad indices but the page was written");
        assert!(
            reads.iter().all(|o| index_fields.contains(o)),
            "bad indices but data was read"
        );
        assert_eq!(before, after);
        return;
    }
    let moved = r.expect("consistent indices refused");
    let room = if read { used } else { RING_SIZE - used } as usize;
    let want = if read { n } else { src.len() };
    assert_eq!(
        moved,
        room.min(want),
        "moved {moved}, room {room}, asked {want}"
    );
    // The bytes moved start at our index: cons for a read, prod for a
    // write.
    let pos = positions(data, mine, moved);
    if read {
        let expect: Vec<u8> = pos.iter().map(|&o| before[o]).collect();
        assert_eq!(
            &out[..moved],
            &expect[..],
            "bytes not those between the indices"
        );
        assert!(
            out[moved..].iter().all(|&b| b == 0),
            "wrote past what it read"
        );
        for o in &reads {
            assert!(
                index_fields.contains(o) || pos.contains(o),
                "read offset {o} outside the {moved} bytes in flight"
            );
        }
        for o in &writes {
            assert!(field(ours).contains(o), "consumer wrote offset {o}");
        }
        decoder.feed(&out[..moved]);
        *fed += moved;
    } else {
        for (i, &o) in pos.iter().enumerate() {
            assert_eq!(after[o], src[i], "byte {i} not where prod said");
        }
        for o in &writes {
            assert!(
                field(ours).contains(o) || pos.contains(o),
                "producer wrote offset {o} outside its free space"
            );
        }
        for o in &reads {
            assert!(index_fields.contains(o), "producer read offset {o}");
        }
    }
    // Our index moved by exactly what moved (untouched when nothing did);
    // every other byte is as it was.
    assert_eq!(page.raw_u32(ours), mine.wrapping_add(moved as u32));
    assert_eq!(page.raw_u32(theirs), peer);
    for o in 0..PAGE_SIZE {
        if !writes.contains(&o) {
            assert_eq!(before[o], after[o], "offset {o} changed untouched");
        }
    }
    // The decoder yields only whole messages of what was fed.
    let mut taken = 0usize;
    loop {
        match decoder.next_message() {
            Ok(Some(m)) => {
                assert!(m.payload.len() <= PAYLOAD_MAX);
                assert_eq!(m.payload.len(), m.header.len as usize);
                taken += HEADER_SIZE + m.payload.len();
                assert!(taken <= *fed, "decoder returned bytes never fed");
            }
            Ok(None) => break,
            Err(_) => {
                // A broken stream: the daemon gives up on the ring; start
                // afresh as a reconnection would.
                decoder.clear();
                *fed = 0;
                return;
            }
        }
    }
    *fed -= taken;
    assert_eq!(decoder.buffered(), *fed);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let page = Page::new();
    for off in [
        ring::REQ_CONS,
        ring::REQ_PROD,
        ring::RSP_CONS,
        ring::RSP_PROD,
    ] {
        let v = inp.u32();
        page.set_u32(off, v);
    }
    let n = usize::from(inp.u16()) % (2 * RING_SIZE as usize + 1);
    let init = inp.bytes(n).to_vec();
    page.mem.borrow_mut()[..init.len()].copy_from_slice(&init);
    let mut decoder = Decoder::new();
    let mut fed = 0usize;
    let mut steps = 0;
    while let Some(op) = inp.byte() {
        steps += 1;
        if steps > 4096 {
            break;
        }
        match op % 8 {
            0 => {
                let n = usize::from(inp.u16()) % 2100;
                check_server(&page, true, n, &[], &mut decoder, &mut fed);
            }
            1 => {
                let n = usize::from(inp.u16()) % 2100;
                let src: Vec<u8> = inp.bytes(n).to_vec();
                check_server(&page, false, 0, &src, &mut decoder, &mut fed);
            }
            // The guest writes requests the proper way.
            2 => {
                let n = usize::from(inp.byte().unwrap_or(0)) * 8;
                let src = inp.bytes(n).to_vec();
                let _ = ring::guest_write(&page, &src);
            }
            // The guest reads replies the proper way.
            3 => {
                let mut b = vec![0u8; usize::from(inp.byte().unwrap_or(0)) * 8];
                let _ = ring::guest_read(&page, &mut b);
            }
            // The guest moves its producer or consumer index by a delta
            // (small or arbitrary).
            4 | 5 => {
                let off = if op % 8 == 4 {
                    ring::REQ_PROD
                } else {
                    ring::RSP_CONS
                };
                let d = if inp.byte().unwrap_or(0) & 1 == 0 {
                    u32::from(inp.u16()) % (2 * RING_SIZE)
                } else {
                    inp.u32()
                };
                let v = page.raw_u32(off).wrapping_add(d);
                page.set_u32(off, v);
            }
            // The guest scribbles over any index, ours included.
            6 => {
                let which = [
                    ring::REQ_CONS,
                    ring::REQ_PROD,
                    ring::RSP_CONS,
                    ring::RSP_PROD,
                ][usize::from(inp.byte().unwrap_or(0)) % 4];
                let v = inp.u32();
                page.set_u32(which, v);
            }
            // The guest rewrites data in the rings (even bytes in flight).
            _ => {
                let off = usize::from(inp.u16()) % (2 * RING_SIZE as usize);
                let n = usize::from(inp.byte().unwrap_or(0));
                let src = inp.bytes(n).to_vec();
                let end = (off + src.len()).min(2 * RING_SIZE as usize);
                page.mem.borrow_mut()[off..end].copy_from_slice(&src[..end - off]);
            }
        }
    }
});
