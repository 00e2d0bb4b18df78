//! A toolstack for the simulator: what libxl does around a guest's life,
//! reduced to what xenstored sees.
//!
//! * **create**: the domain builder makes the domain (and its ring page);
//!   the guest allocates its xenstore port; the toolstack writes the
//!   domain's nodes (`/local/domain/<id>` owned by the guest, `name`,
//!   `domid`, `vm`) and sends `INTRODUCE <domid>|<gfn>|<port>|`;
//! * **shutdown** and **destroy** happen in the hypervisor; xenstored
//!   learns of them through `VIRQ_DOM_EXC`;
//! * **release** sends `RELEASE` (soft reset).

use crate::guest::Guest;
use crate::hypervisor::ShutdownReason;
use crate::protocol::Op;
use crate::Client;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xenstore_proto::{MsgType, PermList};

/// A Xenstore client on the daemon's Unix socket (the toolstack's view),
/// through `xenstore-client`.
pub struct XsSocket {
    c: xenstore_client::Client<xenstore_client::Conn>,
}

/// A client error as an I/O error naming the request.
fn io_err(what: &str) -> impl Fn(xenstore_client::Error) -> io::Error + '_ {
    move |e| match e {
        xenstore_client::Error::Xenstore(x) => io::Error::other(format!("{what}: {x}")),
        xenstore_client::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl XsSocket {
    /// Connects to xenstored's socket.
    pub fn connect(path: &Path) -> io::Result<XsSocket> {
        let c = xenstore_client::Client::connect(path).map_err(io::Error::other)?;
        Ok(XsSocket { c })
    }

    /// One request; its reply payload, or the error name as an error.
    pub fn call(&mut self, t: MsgType, payload: &[u8]) -> io::Result<Vec<u8>> {
        self.c
            .call(t, xenstore_client::Tx::NONE, payload)
            .map_err(io_err(t.name()))
    }

    /// The typed client.
    pub fn client(&mut self) -> &mut xenstore_client::Client<xenstore_client::Conn> {
        &mut self.c
    }

    fn args(parts: &[&str]) -> Vec<u8> {
        parts.iter().flat_map(|s| s.bytes().chain([0])).collect()
    }
}

/// The toolstack of a simulated host.
pub struct Toolstack {
    sim: Client,
    xs: XsSocket,
    sim_socket: PathBuf,
    /// The domain xenstored runs in.
    pub store_domid: u32,
}

impl Toolstack {
    /// A toolstack in dom0, talking to the simulator and to xenstored.
    pub fn new(sim_socket: &Path, xenstored_socket: &Path) -> io::Result<Toolstack> {
        Ok(Toolstack {
            sim: Client::connect(sim_socket, 0)?,
            xs: XsSocket::connect(xenstored_socket)?,
            sim_socket: sim_socket.to_path_buf(),
            store_domid: 0,
        })
    }

    /// Creates and introduces a guest named `name`; returns the guest's
    /// side of its xenstore connection.
    pub fn create(&mut self, name: &str) -> io::Result<Guest> {
        let domid = u32::try_from(self.sim.call_ok(Op::CreateDomain, &[u64::MAX, 0])?)
            .map_err(|_| io::Error::other("bad domid"))?;
        let guest = Guest::attach(&self.sim_socket, domid, self.store_domid)?;
        self.introduce(domid, name, guest.port)?;
        Ok(guest)
    }

    /// Creates and introduces a domain whose guest never talks (no guest
    /// connection to the simulator): its xenstore port is allocated from
    /// dom0, as libxl does. For large host simulations. Returns the domid.
    pub fn create_headless(&mut self, name: &str) -> io::Result<u32> {
        let domid = u32::try_from(self.sim.call_ok(Op::CreateDomain, &[u64::MAX, 0])?)
            .map_err(|_| io::Error::other("bad domid"))?;
        let port = u32::try_from(self.sim.call_ok(
            Op::AllocUnboundFor,
            &[u64::from(domid), u64::from(self.store_domid)],
        )?)
        .map_err(|_| io::Error::other("bad port"))?;
        self.introduce(domid, name, port)?;
        Ok(domid)
    }

    /// Writes a domain's nodes and sends INTRODUCE, as libxl does.
    fn introduce(&mut self, domid: u32, name: &str, port: u32) -> io::Result<()> {
        let home = format!("/local/domain/{domid}");
        let xs = self.xs.client();
        let none = xenstore_client::Tx::NONE;
        xs.mkdir(none, &home).map_err(io_err("MKDIR"))?;
        let perms = PermList::parse([format!("n{domid}").as_bytes(), b"r0"])
            .map_err(|e| io::Error::other(format!("permissions: {e}")))?;
        xs.set_perms(none, &home, &perms)
            .map_err(io_err("SET_PERMS"))?;
        xs.write(none, &format!("{home}/name"), name.as_bytes())
            .map_err(io_err("WRITE"))?;
        xs.write(none, &format!("{home}/domid"), domid.to_string().as_bytes())
            .map_err(io_err("WRITE"))?;
        xs.write(none, &format!("/vm/{domid}/name"), name.as_bytes())
            .map_err(io_err("WRITE"))?;
        xs.introduce(domid, 0, port).map_err(io_err("INTRODUCE"))
    }

    /// The guest's shutdown completes (poweroff, crash, ...).
    pub fn shutdown(&mut self, domid: u32, why: ShutdownReason) -> io::Result<()> {
        self.sim
            .call_ok(Op::Shutdown, &[u64::from(domid), why as u64])
            .map(|_| ())
    }

    /// `xl destroy`: the hypervisor destroys the domain; xenstored hears of
    /// it through `VIRQ_DOM_EXC`. The toolstack then removes `/vm/<id>`.
    pub fn destroy(&mut self, domid: u32) -> io::Result<()> {
        self.sim.call_ok(Op::Destroy, &[u64::from(domid)])?;
        let _ = self
            .xs
            .client()
            .rm(xenstore_client::Tx::NONE, &format!("/vm/{domid}"));
        Ok(())
    }

    /// `RELEASE`, then removes `/vm/<id>` as libxl does when it is done
    /// with a domain.
    pub fn release(&mut self, domid: u32) -> io::Result<()> {
        self.xs.client().release(domid).map_err(io_err("RELEASE"))?;
        let _ = self
            .xs
            .client()
            .rm(xenstore_client::Tx::NONE, &format!("/vm/{domid}"));
        Ok(())
    }

    /// A raw request on xenstored's socket.
    pub fn xs(&mut self, t: MsgType, args: &[&str]) -> io::Result<Vec<u8>> {
        self.xs.call(t, &XsSocket::args(args))
    }
}

/// Runs `guests` guests doing a scripted workload until an error: each
/// writes `data/heartbeat` over its ring every second; with `churn_secs`,
/// the oldest guest is destroyed and a new one created that often.
/// `on_event` hears what happens (for logs).
pub fn run_guests(
    sim_socket: &Path,
    xenstored_socket: &Path,
    guests: u32,
    churn_secs: u64,
    mut on_event: impl FnMut(&str),
) -> io::Result<()> {
    let mut ts = Toolstack::new(sim_socket, xenstored_socket)?;
    let mut live = std::collections::VecDeque::new();
    let mut made = 0u32;
    for _ in 0..guests {
        made += 1;
        let g = ts.create(&format!("guest-{made}"))?;
        on_event(&format!("guest-{made} is domain {}", g.domid));
        live.push_back(g);
    }
    let mut beat = 0u64;
    let mut last_churn = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        beat += 1;
        for g in live.iter_mut() {
            let mut p = b"data/heartbeat\0".to_vec();
            p.extend_from_slice(beat.to_string().as_bytes());
            g.request(MsgType::Write, 0, &p)?;
        }
        if churn_secs > 0 && last_churn.elapsed() >= Duration::from_secs(churn_secs) {
            last_churn = Instant::now();
            if let Some(old) = live.pop_front() {
                on_event(&format!("destroying domain {}", old.domid));
                ts.destroy(old.domid)?;
            }
            made += 1;
            let g = ts.create(&format!("guest-{made}"))?;
            on_event(&format!("guest-{made} is domain {}", g.domid));
            live.push_back(g);
        }
    }
}
