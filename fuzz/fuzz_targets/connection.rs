//! Drives the daemon's state (no event loop, no binary) with arbitrary
//! input on three socket connections, one of them unprivileged, delivered
//! in arbitrary pieces, with output room and the clock chosen by the input
//! too: nothing may panic, and what the daemon writes on every connection
//! is a stream of well-formed messages (no header over 4096 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rxenstored::conn::MemStream;
use rxenstored::server::ServerConfig;
use rxenstored::state::State;
use rxenstored::trace::Trace;
use std::time::{Duration, Instant};
use xenstore_proto::Decoder;
use xenstore_store::StoreConfig;

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
    let pipes: Vec<MemStream> = (0..3)
        .map(|_| {
            let m = MemStream::default();
            m.pipe().room = Some(0);
            m
        })
        .collect();
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
                pipes[k].pipe().to_daemon.extend(chunk);
                s.schedule(ids[k]);
            }
            1 => {
                *pipes[k].pipe().room.get_or_insert(0) += len * 64;
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
        let out = std::mem::take(&mut p.pipe().from_daemon);
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
