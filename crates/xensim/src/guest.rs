//! A simulated guest: a domain that talks to xenstored over its ring page
//! and event channel, as a guest kernel's xenbus driver does.
//!
//! The Xenstore side is `xenstore-client` over its raw-ring transport
//! ([`xenstore_client::ring::RingStream`]); this module supplies the
//! simulator's event channel and page and keeps a few helpers for tests
//! (raw bytes, the page's error flag).

use crate::client::Client;
use crate::protocol::Op;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use xen_stable::MappedPage;
use xenstore_client::ring::{EventChannel, RingStream};
use xenstore_client::{Client as XsClient, Tx};
use xenstore_proto::{Message, MsgType};

/// How long a request waits for room in the ring or for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The guest's event channel to xenstored, through the simulator.
pub struct SimEvtchn {
    client: Client,
    events: UnixStream,
    port: u32,
}

impl EventChannel for SimEvtchn {
    fn notify(&mut self) -> io::Result<()> {
        self.client
            .call_ok(Op::Notify, &[u64::from(self.port)])
            .map(drop)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        self.events
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
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
}

/// The xenstore client a simulated guest runs.
pub type GuestClient = XsClient<RingStream<MappedPage, SimEvtchn>>;

/// One guest domain's xenstore connection.
pub struct Guest {
    /// The domain.
    pub domid: u32,
    /// The guest's local port for xenstore (the toolstack passes it in
    /// INTRODUCE).
    pub port: u32,
    xs: GuestClient,
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
        let domid = client.domid;
        let page = xen_stable::dom0::map_kva(ring)?;
        let mut stream = RingStream::new(
            page,
            SimEvtchn {
                client,
                events,
                port,
            },
        );
        stream.set_timeout(Some(REQUEST_TIMEOUT));
        Ok(Guest {
            domid,
            port,
            xs: XsClient::new(stream),
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

    /// The xenstore client (typed operations, pipelining, watches).
    pub fn xs(&mut self) -> &mut GuestClient {
        &mut self.xs
    }

    /// The ring page (for hostile tests that write garbage into it).
    pub fn page(&self) -> &MappedPage {
        self.xs.get_ref().page()
    }

    /// Signals xenstored.
    pub fn notify(&mut self) -> io::Result<()> {
        self.xs.get_mut().evtchn().notify()
    }

    /// Sends raw bytes over the ring, waiting up to `timeout` for room.
    pub fn send_raw(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let (n, r) = self.send_partial(bytes, timeout);
        debug_assert!(r.is_err() || n == bytes.len());
        r
    }

    /// Sends raw bytes over the ring, waiting up to `timeout` for room;
    /// how many went in, and the error that stopped it (a timeout leaves
    /// the rest to send).
    pub fn send_partial(&mut self, mut bytes: &[u8], timeout: Duration) -> (usize, io::Result<()>) {
        let s = self.xs.get_mut();
        s.set_timeout(Some(timeout));
        let mut sent = 0;
        let mut result = Ok(());
        while !bytes.is_empty() {
            match s.write(bytes) {
                Ok(n) => {
                    sent += n;
                    bytes = bytes.get(n..).unwrap_or_default();
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        s.set_timeout(Some(REQUEST_TIMEOUT));
        (sent, result)
    }

    /// The next message from xenstored (reply or event, in the order sent),
    /// waiting up to `t`; `None` when none came.
    pub fn next_message(&mut self, t: Duration) -> io::Result<Option<Message>> {
        self.xs.get_mut().set_timeout(Some(t));
        let r = self.xs.next_message();
        self.xs.get_mut().set_timeout(Some(REQUEST_TIMEOUT));
        match r {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e) => Err(into_io(e)),
        }
    }

    /// One request and its reply, as xenstored sent it (an ERROR reply
    /// included). Watch events that arrive meanwhile stay queued for
    /// [`Guest::next_message`] and [`Guest::take_events`].
    pub fn request(&mut self, t: MsgType, tx: u32, payload: &[u8]) -> io::Result<Message> {
        let id = self
            .xs
            .send_message(t as u32, Tx(tx), payload)
            .map_err(into_io)?;
        self.xs.wait_message(id).map_err(into_io)
    }

    /// Drops the watch events kept so far; how many there were.
    pub fn take_events(&mut self) -> usize {
        let mut n = 0;
        while self.xs.kept_events() > 0 && self.xs.next_event().is_ok() {
            n += 1;
        }
        n
    }

    /// The ring's error field (written by xenstored when it gives up).
    pub fn ring_error(&self) -> u32 {
        self.xs.get_ref().error_flag()
    }

    /// The features xenstored advertised.
    pub fn server_features(&self) -> u32 {
        self.xs.get_ref().server_features()
    }
}

fn into_io(e: xenstore_client::Error) -> io::Error {
    match e {
        xenstore_client::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}
