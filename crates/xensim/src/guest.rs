//! A simulated guest: a domain that talks to xenstored over its ring page
//! and event channel, as a guest kernel's xenbus driver does.

use crate::client::Client;
use crate::protocol::Op;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use xen_stable::MappedPage;
use xenstore_proto::ring::{self, RingPage};
use xenstore_proto::{Decoder, Message, MsgType};

/// One guest domain's xenstore connection.
pub struct Guest {
    /// The domain.
    pub domid: u32,
    /// The guest's local port for xenstore (the toolstack passes it in
    /// INTRODUCE).
    pub port: u32,
    client: Client,
    events: UnixStream,
    page: MappedPage,
    decoder: Decoder,
    req_id: u32,
    /// Watch events received while waiting for replies.
    pub events_seen: Vec<Message>,
}

impl Guest {
    /// Connects as `domid` (which must exist), allocates the xenstore port
    /// (peer: `store_domid`) and maps the domain's own ring page.
    pub fn attach(sim_socket: &Path, domid: u32, store_domid: u32) -> io::Result<Guest> {
        let mut client = Client::connect(sim_socket, domid)?;
        let events = client.open_evtchn()?;
        let port = u32::try_from(client.call_ok(Op::AllocUnbound, &[u64::from(store_domid)])?)
            .map_err(|_| io::Error::other("bad port"))?;
        let path = client.call(Op::OwnRing, &[])?.text;
        Guest::with(client, events, port, Path::new(&path))
    }

    fn with(client: Client, events: UnixStream, port: u32, ring: &Path) -> io::Result<Guest> {
        Ok(Guest {
            domid: client.domid,
            port,
            page: xen_stable::dom0::map_kva(ring)?,
            client,
            events,
            decoder: Decoder::new(),
            req_id: 0,
            events_seen: Vec::new(),
        })
    }

    /// Attaches to an existing port and ring page: dom0's kernel, whose
    /// xenstore port and page exist from boot (`xsd_port`, `xsd_kva`).
    pub fn attach_port(sim_socket: &Path, domid: u32, port: u32, ring: &Path) -> io::Result<Guest> {
        let mut client = Client::connect(sim_socket, domid)?;
        let events = client.open_evtchn()?;
        client.call_ok(Op::Adopt, &[u64::from(port)])?;
        Guest::with(client, events, port, ring)
    }

    /// The ring page (for hostile tests that write garbage into it).
    pub fn page(&self) -> &MappedPage {
        &self.page
    }

    /// Signals xenstored.
    pub fn notify(&mut self) -> io::Result<()> {
        self.client
            .call_ok(Op::Notify, &[u64::from(self.port)])
            .map(|_| ())
    }

    /// Waits up to `t` for an event on our port; unmasks it.
    fn wait_event(&mut self, t: Duration) -> io::Result<bool> {
        self.events.set_read_timeout(Some(t))?;
        let mut b = [0u8; 4];
        match self.events.read_exact(&mut b) {
            Ok(()) => {
                let port = u32::from_ne_bytes(b);
                self.client.call_ok(Op::Unmask, &[u64::from(port)])?;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends raw bytes over the ring, waiting for room as needed.
    pub fn send_raw(&mut self, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while !bytes.is_empty() {
            let n = ring::guest_write(&self.page, bytes).map_err(io::Error::other)?;
            bytes = &bytes[n..];
            self.notify()?;
            if !bytes.is_empty() {
                if Instant::now() > deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "request ring full"));
                }
                self.wait_event(Duration::from_millis(50))?;
            }
        }
        Ok(())
    }

    /// Reads whatever replies and events are in the ring.
    fn drain(&mut self) -> io::Result<usize> {
        let mut buf = [0u8; 1024];
        let mut total = 0;
        loop {
            let n = ring::guest_read(&self.page, &mut buf).map_err(io::Error::other)?;
            if n == 0 {
                break;
            }
            total += n;
            self.decoder.feed(&buf[..n]);
        }
        if total > 0 {
            self.notify()?;
        }
        Ok(total)
    }

    /// The next message from xenstored (reply or event), waiting up to `t`.
    pub fn next_message(&mut self, t: Duration) -> io::Result<Option<Message>> {
        let deadline = Instant::now() + t;
        loop {
            self.drain()?;
            if let Some(m) = self.decoder.next_message().map_err(io::Error::other)? {
                return Ok(Some(m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.wait_event(left.min(Duration::from_millis(100)))?;
        }
    }

    /// One request and its reply (events seen meanwhile are kept in
    /// `events_seen`).
    pub fn request(&mut self, t: MsgType, tx: u32, payload: &[u8]) -> io::Result<Message> {
        self.req_id = self.req_id.wrapping_add(1);
        let id = self.req_id;
        let m = Message::new(t as u32, id, tx, payload.to_vec());
        self.send_raw(&m.encode(), Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_message(left)? {
                Some(r) if r.kind() == Some(MsgType::WatchEvent) => self.events_seen.push(r),
                Some(r) => return Ok(r),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no reply from xenstored",
                    ))
                }
            }
        }
    }

    /// The ring's error field (written by xenstored when it gives up).
    pub fn ring_error(&self) -> u32 {
        self.page.load_u32(ring::ERROR)
    }

    /// The features xenstored advertised.
    pub fn server_features(&self) -> u32 {
        self.page.load_u32(ring::SERVER_FEATURES)
    }
}
