//! Cutting a byte stream into messages, and building messages.
//!
//! [`Decoder`] is fed whatever a socket read or a ring copy produced and
//! hands back whole messages. A header announcing more than
//! [`PAYLOAD_MAX`] bytes is a protocol error ([`FrameError::TooLong`]): the
//! stream cannot be resynchronised, so the caller drops the connection (a
//! socket) or marks it broken (a ring), as C xenstored does.

use crate::error::XsError;
use crate::header::{Header, MsgType, HEADER_SIZE, PAYLOAD_MAX};

/// A whole message: header plus payload (`payload.len() == header.len`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; `len` matches the payload.
    pub header: Header,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// The stream is broken and cannot be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announced a payload longer than the protocol allows.
    #[error("payload length {0} exceeds {PAYLOAD_MAX}")]
    TooLong(u32),
}

impl Message {
    /// A message with the given fields; `len` is taken from the payload.
    pub fn new(msg_type: u32, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        Message {
            header: Header {
                msg_type,
                req_id,
                tx_id,
                len,
            },
            payload,
        }
    }

    /// The successful reply to `request`: same type, `req_id` and `tx_id`.
    pub fn reply(request: &Header, payload: Vec<u8>) -> Message {
        Message::new(request.msg_type, request.req_id, request.tx_id, payload)
    }

    /// The `OK` acknowledgement of `request`.
    pub fn ok(request: &Header) -> Message {
        Message::reply(request, b"OK\0".to_vec())
    }

    /// An ERROR reply to `request`, carrying the error name and a NUL.
    pub fn error(request: &Header, err: XsError) -> Message {
        let mut payload = Vec::with_capacity(10);
        payload.extend_from_slice(err.name().as_bytes());
        payload.push(0);
        Message::new(
            MsgType::Error as u32,
            request.req_id,
            request.tx_id,
            payload,
        )
    }

    /// A WATCH_EVENT for `path` and `token`, or `None` when it would not
    /// fit in one message (C xenstored then drops the event silently).
    pub fn watch_event(path: &[u8], token: &[u8]) -> Option<Message> {
        let len = path.len() + token.len() + 2;
        if len > PAYLOAD_MAX {
            return None;
        }
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(path);
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        Some(Message::new(MsgType::WatchEvent as u32, 0, 0, payload))
    }

    /// The message type, if defined.
    pub fn kind(&self) -> Option<MsgType> {
        self.header.kind()
    }

    /// Appends the wire form (header then payload) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_SIZE + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    /// Total size on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_SIZE + self.payload.len()
    }
}

/// Incremental message decoder for one connection's input stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    broken: Option<FrameError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends bytes read from the connection.
    pub fn feed(&mut self, data: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The bytes received but not yet returned as messages (whole
    /// messages not yet taken, then the beginning of the next one): what a
    /// live update hands over.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// True when a partial message is waiting for more bytes.
    pub fn has_partial(&self) -> bool {
        self.buffered() > 0
    }

    /// Drops any partial input (used when a connection is reset).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.broken = None;
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the
    /// error that broke the stream (returned again on every later call).
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let avail = &self.buf[self.start..];
        let Some(head) = avail.first_chunk::<HEADER_SIZE>() else {
            return Ok(None);
        };
        let header = Header::from_bytes(head);
        if header.len as usize > PAYLOAD_MAX {
            self.broken = Some(FrameError::TooLong(header.len));
            return Err(FrameError::TooLong(header.len));
        }
        let total = HEADER_SIZE + header.len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let payload = avail[HEADER_SIZE..total].to_vec();
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(Message { header, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: u32, id: u32, payload: &[u8]) -> Vec<u8> {
        Message::new(t, id, 0, payload.to_vec()).encode()
    }

    #[test]
    fn pipelined_messages_in_one_feed() {
        let mut d = Decoder::new();
        let mut bytes = msg(2, 7, b"/a\0");
        bytes.extend(msg(2, 8, b"/b\0"));
        d.feed(&bytes);
        assert_eq!(d.next_message().unwrap().unwrap().header.req_id, 7);
        assert_eq!(d.next_message().unwrap().unwrap().header.req_id, 8);
        assert_eq!(d.next_message().unwrap(), None);
    }

    #[test]
    fn byte_by_byte() {
        let mut d = Decoder::new();
        let bytes = msg(11, 1, b"/a\0value");
        for (i, b) in bytes.iter().enumerate() {
            d.feed(std::slice::from_ref(b));
            let m = d.next_message().unwrap();
            assert_eq!(m.is_some(), i == bytes.len() - 1);
        }
    }

    #[test]
    fn too_long_is_sticky() {
        let mut d = Decoder::new();
        let h = Header {
            msg_type: 2,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        };
        d.feed(&h.to_bytes());
        assert_eq!(d.next_message(), Err(FrameError::TooLong(4097)));
        d.feed(&msg(2, 1, b"/\0"));
        assert_eq!(d.next_message(), Err(FrameError::TooLong(4097)));
    }

    #[test]
    fn exactly_max_payload_is_fine() {
        let mut d = Decoder::new();
        d.feed(&msg(11, 1, &[b'x'; PAYLOAD_MAX]));
        assert_eq!(
            d.next_message().unwrap().unwrap().payload.len(),
            PAYLOAD_MAX
        );
    }

    #[test]
    fn oversized_watch_event_is_dropped() {
        assert!(Message::watch_event(&[b'a'; 4000], &[b't'; 94]).is_some());
        assert!(Message::watch_event(&[b'a'; 4000], &[b't'; 95]).is_none());
    }

    #[test]
    fn error_reply_format() {
        let req = Header {
            msg_type: 2,
            req_id: 9,
            tx_id: 3,
            len: 0,
        };
        let m = Message::error(&req, XsError::Enoent);
        assert_eq!(m.header.msg_type, 16);
        assert_eq!(m.header.req_id, 9);
        assert_eq!(m.header.tx_id, 3);
        assert_eq!(m.payload, b"ENOENT\0");
    }
}
