//! A client of the simulator's protocol (stand-in libraries, guests,
//! toolstack commands, tests).

use crate::protocol::{Op, Reply, Request, ENV_DOMID, ENV_SOCKET};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// One connection to the simulator, acting for one domain.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    /// The socket, to open event connections.
    pub socket: PathBuf,
    /// The domain this client acts for.
    pub domid: u32,
}

impl Client {
    /// Connects to the simulator at `socket` as domain `domid`.
    pub fn connect(socket: &Path, domid: u32) -> io::Result<Client> {
        let mut stream = UnixStream::connect(socket)?;
        stream.write_all(&Request::new(Op::Hello, &[u64::from(domid)]).encode())?;
        Reply::read_from(&mut stream)?.result()?;
        Ok(Client {
            stream,
            socket: socket.to_path_buf(),
            domid,
        })
    }

    /// Connects as `XENSIM_DOMID` (default 0) to `XENSIM_SOCKET`.
    pub fn from_env() -> io::Result<Client> {
        let socket = std::env::var_os(ENV_SOCKET).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{ENV_SOCKET} is not set: no simulator"),
            )
        })?;
        let domid = std::env::var(ENV_DOMID)
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        Client::connect(Path::new(&socket), domid)
    }

    /// One request and its reply.
    pub fn call(&mut self, op: Op, args: &[u64]) -> io::Result<Reply> {
        self.stream.write_all(&Request::new(op, args).encode())?;
        Reply::read_from(&mut self.stream)
    }

    /// One request; its status, or the errno as an error.
    pub fn call_ok(&mut self, op: Op, args: &[u64]) -> io::Result<i64> {
        self.call(op, args)?.result()
    }

    /// Makes this connection an event-channel handle and opens the second
    /// connection on which its pending ports arrive (close-on-exec). That
    /// connection is the handle: bound to the abstract name the simulator
    /// gave, it names the handle after an exec ([`Client::reopen_evtchn`]).
    pub fn open_evtchn(&mut self) -> io::Result<UnixStream> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let r = self.call(Op::OpenEvtchn, &[])?;
        let h = r.result()?;
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::bind(&fd, &SocketAddrUnix::new_abstract_name(r.text.as_bytes())?)?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(self.socket.as_path())?)?;
        let mut ev = UnixStream::from(fd);
        ev.write_all(&Request::new(Op::AttachEvents, &[h as u64]).encode())?;
        Reply::read_from(&mut ev)?.result()?;
        Ok(ev)
    }

    /// Connects to `XENSIM_SOCKET` as `XENSIM_DOMID` for the handle whose
    /// event connection `events` is (one inherited across exec): what
    /// `xenevtchn_fdopen` does. Fails with EBADF if `events` is not an
    /// event connection of this simulator.
    pub fn reopen_evtchn(events: &UnixStream) -> io::Result<Client> {
        use std::os::linux::net::SocketAddrExt;
        let addr = events.local_addr()?;
        let (token, h) = addr
            .as_abstract_name()
            .and_then(crate::protocol::parse_evtchn_name)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let mut c = Client::from_env()?;
        c.call_ok(Op::ReopenEvtchn, &[token, h])?;
        Ok(c)
    }
}
