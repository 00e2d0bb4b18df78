//! Drives the daemon's state (no event loop, no binary) with arbitrary
//! input on three socket connections, one of them unprivileged, delivered
//! in arbitrary pieces, with output room and the clock chosen by the input
//! too: nothing may panic, and what the daemon writes on every connection
//! is a stream of well-formed messages (no header over 4096 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rxenstored::conn::Stream;
use rxenstored::server::ServerConfig;
use rxenstored::state::State;
use rxenstored::trace::Trace;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};
use xenstore_proto::Decoder;
use xenstore_store::StoreConfig;

#[derive(Default)]
struct Pipe {
    to_daemon: VecDeque<u8>,
    from_daemon: Vec<u8>,
    room: usize,
}

#[derive(Clone, Default)]
struct Mem(Rc<RefCell<Pipe>>);

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.0.borrow_mut();
        if p.to_daemon.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(p.to_daemon.len());
        for (b, v) in buf.iter_mut().zip(p.to_daemon.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut p = self.0.borrow_mut();
        let n = p.room.min(buf.len());
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        p.room -= n;
        p.from_daemon.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Mem {
    fn fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let cfg = |priv_domid| ServerConfig {
        socket: "/nonexistent".into(),
        store: StoreConfig {
            priv_domid,
            ..StoreConfig::default()
        },
        trace_file: None,
        trace_control: Vec::new(),
        file_base: "/nonexistent".into(),
        watch_event_timeout: Some(Duration::from_secs(20)),
        xen: None,
    };
    let Ok(trace) = Trace::open(None) else { return };
    // The first byte picks whether sockets are privileged.
    let Some((&first, mut rest)) = data.split_first() else { return };
    let mut s = State::new(cfg(u32::from(first & 1) * 7), trace, None, t0);
    let pipes: Vec<Mem> = (0..3).map(|_| Mem::default()).collect();
    let ids: Vec<u64> = pipes.iter().map(|p| s.add_socket(Box::new(p.clone()))).collect();
    let mut now = t0;
    // Steps: [op, len, bytes...]
    while let Some((&op, r)) = rest.split_first() {
        let Some((&len, r)) = r.split_first() else { break };
        let len = usize::from(len).min(r.len());
        let (chunk, r) = r.split_at(len);
        rest = r;
        let k = usize::from(op % 3);
        match op / 3 % 4 {
            0 => {
                pipes[k].0.borrow_mut().to_daemon.extend(chunk);
                s.schedule(ids[k]);
            }
            1 => {
                pipes[k].0.borrow_mut().room += len * 64;
                s.flush(ids[k]);
            }
            2 => {
                now += Duration::from_millis(len as u64 * 100);
                s.set_now(now);
            }
            _ => {}
        }
        s.serve();
        let _ = s.take_actions();
        let _ = s.take_closed();
    }
    // Everything written is whole messages, in order.
    for p in &pipes {
        let out = std::mem::take(&mut p.0.borrow_mut().from_daemon);
        let mut d = Decoder::new();
        d.feed(&out);
        loop {
            match d.next_message() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("the daemon wrote a malformed message: {e}"),
            }
        }
    }
});
