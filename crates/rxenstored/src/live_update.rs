//! Live update: the daemon's state as Xen's migration stream
//! (`xenstore-migrate`) and back, as C xenstored hands it from one binary
//! to the next.
//!
//! This module holds the pure parts: a connection's buffered input and
//! pending output as stream records and back. [`crate::state::State`]
//! assembles the stream (GLOBAL, one CONNECTION per connection with its
//! WATCH records, the NODE records in tree order, the DOMAIN records) and
//! restores from one.
//!
//! What is handed over today: socket connections (by descriptor, with
//! their unprocessed input and unsent output, a partly written message
//! included), watches, the tree, domain features and quotas. Ring
//! connections are not yet: a state with guests is refused with
//! [`LiveUpdateError::Rings`], so that no guest is ever dropped by an
//! update. Open transactions are not handed over (C does not either): an
//! update waits for them, or drops them when forced.

use crate::conn::{Output, Queued};
use std::time::Instant;
use xenstore_migrate as mig;
use xenstore_proto::{Decoder, Header, HEADER_SIZE};

/// Why a state cannot be handed over or taken over.
#[derive(Debug, thiserror::Error)]
pub enum LiveUpdateError {
    /// Guests are connected over rings: not handed over yet.
    #[error("{0} guest ring connection(s): live update with guests is not supported yet")]
    Rings(usize),
    /// A socket whose descriptor is unknown (an in-memory test stream).
    #[error("connection {0} has no descriptor to hand over")]
    NoDescriptor(u64),
    /// The stream could not be written or read.
    #[error("migration stream: {0}")]
    Stream(#[from] mig::Error),
    /// The stream's content is not a state this daemon can take.
    #[error("state: {0}")]
    State(String),
    /// A handed-over descriptor could not be taken.
    #[error("descriptor {fd}: {source}")]
    Adopt {
        /// The descriptor.
        fd: i32,
        /// Why.
        source: std::io::Error,
    },
}

fn record_message(bytes: &[u8]) -> Option<mig::Message> {
    let head = bytes.first_chunk::<HEADER_SIZE>()?;
    let h = Header::from_bytes(head);
    let payload = bytes.get(HEADER_SIZE..)?;
    (payload.len() == h.len as usize).then(|| mig::Message {
        msg_type: h.msg_type,
        req_id: h.req_id,
        tx_id: h.tx_id,
        payload: payload.to_vec(),
    })
}

fn wire(m: &mig::Message) -> Vec<u8> {
    xenstore_proto::Message::new(m.msg_type, m.req_id, m.tx_id, m.payload.clone()).encode()
}

/// A connection's received, unprocessed bytes as the stream's input:
/// whole requests, then at most one partly received message.
pub fn input_record(decoder: &Decoder) -> mig::Input {
    let mut rest = decoder.pending();
    let mut input = mig::Input::default();
    while let Some(head) = rest.first_chunk::<HEADER_SIZE>() {
        let h = Header::from_bytes(head);
        let total = HEADER_SIZE + h.len as usize;
        match rest.get(..total) {
            Some(whole) => {
                if let Some(m) = record_message(whole) {
                    input.requests.push(m);
                }
                rest = &rest[total..];
            }
            None => {
                input.partial = Some(mig::PartialInput::Payload {
                    msg_type: h.msg_type,
                    req_id: h.req_id,
                    tx_id: h.tx_id,
                    len: h.len,
                    received: rest[HEADER_SIZE..].to_vec(),
                });
                return input;
            }
        }
    }
    if !rest.is_empty() {
        input.partial = Some(mig::PartialInput::Header(rest.to_vec()));
    }
    input
}

/// Feeds a connection's handed-over input back into its decoder.
pub fn restore_input(input: &mig::Input, decoder: &mut Decoder) {
    for m in &input.requests {
        decoder.feed(&wire(m));
    }
    match &input.partial {
        None => {}
        Some(mig::PartialInput::Header(b)) => decoder.feed(b),
        Some(mig::PartialInput::Payload {
            msg_type,
            req_id,
            tx_id,
            len,
            received,
        }) => {
            let h = Header {
                msg_type: *msg_type,
                req_id: *req_id,
                tx_id: *tx_id,
                len: *len,
            };
            decoder.feed(&h.to_bytes());
            decoder.feed(received);
        }
    }
}

/// A connection's unsent output as the stream's output: the tail of a
/// message already going out, then whole messages.
pub fn output_record(out: &Output) -> mig::Output {
    let (partial, rest) = out.pending();
    mig::Output {
        partial: partial.to_vec(),
        messages: rest.filter_map(|q| record_message(&q.bytes)).collect(),
    }
}

/// Queues handed-over output again: the partial tail first (as bytes of
/// its own), then the messages. Nothing is charged: what a domain's queue
/// held before the update was charged then.
pub fn restore_output(output: &mig::Output, out: &mut Output, now: Instant) {
    let queued = |bytes: Vec<u8>, event: bool| Queued {
        bytes,
        at: now,
        event,
        charged: 0,
        ticket: None,
    };
    if !output.partial.is_empty() {
        out.push(queued(output.partial.clone(), false));
    }
    for m in &output.messages {
        let event = m.msg_type == xenstore_proto::MsgType::WatchEvent as u32;
        out.push(queued(wire(m), event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_proto::Message;

    #[test]
    fn input_splits_into_requests_and_the_partial_one() {
        let a = Message::new(2, 1, 0, b"/a\0".to_vec()).encode();
        let b = Message::new(11, 2, 0, b"/b\0xyz".to_vec()).encode();
        for cut in 0..=b.len() {
            let mut d = Decoder::new();
            d.feed(&a);
            d.feed(&b[..cut]);
            let rec = input_record(&d);
            assert_eq!(rec.requests.len(), 1 + usize::from(cut == b.len()));
            assert_eq!(rec.partial.is_some(), cut > 0 && cut < b.len(), "cut {cut}");
            let mut back = Decoder::new();
            restore_input(&rec, &mut back);
            assert_eq!(back.pending(), d.pending(), "cut {cut}");
        }
    }

    #[test]
    fn output_keeps_the_unwritten_tail_and_the_rest() {
        let mut out = Output::default();
        let now = Instant::now();
        for i in 0..3u32 {
            out.push(Queued {
                bytes: Message::new(2, i, 0, vec![b'x'; 10]).encode(),
                at: now,
                event: false,
                charged: 0,
                ticket: None,
            });
        }
        // Five bytes of the first message went out, then no room.
        let mut room = 5;
        let _ = out.write::<()>(|_| Ok(std::mem::take(&mut room)), |_| {});
        let rec = output_record(&out);
        assert_eq!(rec.partial.len(), 26 - 5);
        assert_eq!(rec.messages.len(), 2);
        let mut back = Output::default();
        restore_output(&rec, &mut back, now);
        assert_eq!(back.bytes(), out.bytes());
        let mut a = Vec::new();
        let mut b = Vec::new();
        let _ = out.write::<()>(
            |iov| {
                let n: usize = iov.iter().map(|s| s.len()).sum();
                iov.iter().for_each(|s| a.extend_from_slice(s));
                Ok(n)
            },
            |_| {},
        );
        let _ = back.write::<()>(
            |iov| {
                let n: usize = iov.iter().map(|s| s.len()).sum();
                iov.iter().for_each(|s| b.extend_from_slice(s));
                Ok(n)
            },
            |_| {},
        );
        assert_eq!(a, b);
    }
}
