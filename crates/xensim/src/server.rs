//! The simulator process's server: a Unix socket in the simulator's
//! directory through which the stand-in libraries, simulated guests and the
//! toolstack commands reach the [`Hypervisor`].
//!
//! Layout of the directory:
//!
//! | file | what |
//! |---|---|
//! | `sim.sock` | the server socket ([`crate::protocol`]) |
//! | `ring-<domid>` | a domain's xenstore ring page (4 KiB, mapped shared) |
//! | `xsd_kva` | dom0's ring page, as `/proc/xen/xsd_kva` |
//! | `xsd_port` | dom0's xenstore port, as `/proc/xen/xsd_port` |
//!
//! One thread per connection, one lock around the hypervisor: simple and
//! correct; the simulator's speed is not what benchmarks measure (they read
//! the call counters).

use crate::hypervisor::{Errno, Hypervisor, ShutdownReason};
use crate::protocol::{Op, Reply, Request};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// errno values (Linux) for the wire.
fn errno(e: Errno) -> i32 {
    match e {
        Errno::Esrch => 3,
        Errno::Enoent => 2,
        Errno::Eacces => 13,
        Errno::Eexist => 17,
        Errno::Ebusy => 16,
        Errno::Einval => 22,
        Errno::Enotconn => 107,
        Errno::Enospc => 28,
    }
}

const EINVAL: i32 = 22;

struct Handle {
    domid: u32,
    events: Option<UnixStream>,
    /// The simulator connection that is the event connection (its end
    /// closing closes the handle).
    attached_by: Option<u64>,
}

struct State {
    hyp: Hypervisor,
    dir: PathBuf,
    /// Keep `dying-bitmap` up to date after every change (mapped design).
    bitmap_mapped: bool,
    /// Time each domain-state hypercall costs (spent busy, as a hypercall
    /// would): see [`Sim::set_call_cost`].
    call_cost: std::time::Duration,
    next_handle: u64,
    handles: HashMap<u64, Handle>,
    owner: HashMap<(u32, u32), u64>,
    /// Names this simulator's event connections apart from another's
    /// (their abstract socket names share one namespace).
    token: u64,
    /// Domains to destroy the moment `VIRQ_DOM_EXC` is unbound (a test
    /// reaching into a live update's switch: see
    /// [`Sim::destroy_when_virq_unbound`]).
    destroy_on_virq_unbind: Vec<u32>,
    /// Run the moment `VIRQ_DOM_EXC` is unbound (see
    /// [`Sim::when_virq_unbound`]).
    run_on_virq_unbind: Vec<Box<dyn FnOnce() + Send>>,
}

impl State {
    fn ring_path(&self, domid: u32) -> PathBuf {
        self.dir.join(format!("ring-{domid}"))
    }

    fn make_ring(&self, domid: u32) -> io::Result<()> {
        let p = self.ring_path(domid);
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, vec![0u8; 4096])
    }

    /// Creates a domain and its ring page.
    fn create(&mut self, want: Option<u32>, caps: u32) -> Result<u32, i32> {
        let d = self.hyp.create_domain(want, caps).map_err(errno)?;
        self.make_ring(d)
            .map_err(|e| e.raw_os_error().unwrap_or(EINVAL))?;
        Ok(d)
    }

    /// Destroys a domain. Mappings stay valid; a new domain with this domid
    /// gets a new page file.
    fn destroy(&mut self, domid: u32) -> Result<(), Errno> {
        self.hyp.destroy(domid)?;
        let _ = std::fs::remove_file(self.ring_path(domid));
        Ok(())
    }

    fn bitmap_path(&self) -> PathBuf {
        self.dir.join("dying-bitmap")
    }

    /// Writes the bitmap file in place (its mappings see the new bits).
    fn write_bitmap(&self, bits: &[u64]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let bytes: Vec<u8> = bits.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.bitmap_path())?;
        f.write_all_at(&bytes, 0)
    }

    /// Hands every pending port to the handle that bound it.
    fn deliver(&mut self) {
        if self.bitmap_mapped {
            let bits = self.hyp.dying_bits();
            let _ = self.write_bitmap(&bits);
        }
        let domids: Vec<u32> = {
            let mut v: Vec<u32> = self.handles.values().map(|h| h.domid).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for d in domids {
            while let Some(port) = self.hyp.pending(d) {
                let sink = self
                    .owner
                    .get(&(d, port))
                    .and_then(|h| self.handles.get_mut(h))
                    .and_then(|h| h.events.as_mut());
                match sink {
                    Some(s) => {
                        if s.write_all(&port.to_ne_bytes()).is_err() {
                            // The handle went away; its close unbinds.
                        }
                    }
                    // Nobody listens: leave it deliverable later.
                    None => self.hyp.unmask(d, port),
                }
            }
        }
    }

    fn close_handle(&mut self, h: u64) {
        let Some(handle) = self.handles.remove(&h) else {
            return;
        };
        let ports: Vec<(u32, u32)> = self
            .owner
            .iter()
            .filter(|(_, o)| **o == h)
            .map(|(k, _)| *k)
            .collect();
        for (d, p) in ports {
            self.owner.remove(&(d, p));
            let _ = self.hyp.unbind(d, p);
        }
        let _ = handle;
    }
}

/// Default cost of one domain-state hypercall: 2 us, the order of a
/// privcmd ioctl from user space (a system call) plus a hypercall entry
/// and exit and the domctl's lock and copy on current x86 hardware.
/// Benchmarks state the value they ran with; 0 measures the simulator
/// alone.
pub const DEFAULT_CALL_COST: std::time::Duration = std::time::Duration::from_micros(2);

fn spend(d: std::time::Duration) {
    if d.is_zero() {
        return;
    }
    let t = std::time::Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Per-connection context.
struct Conn {
    domid: u32,
    handle: Option<u64>,
    /// Unique among the simulator's connections (names per-connection
    /// files).
    id: u64,
    /// Grant mappings made through this connection, per domain: dropped
    /// when it closes, as gntdev's release unmaps everything of a closed
    /// (or exec'ed close-on-exec) descriptor.
    grants: HashMap<u32, u32>,
}

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Writes the bitmap file and answers its path.
fn bitmap_reply(st: &State, bits: &[u64]) -> Reply {
    match st.write_bitmap(bits) {
        Ok(()) => Reply {
            status: 0,
            vals: [0; 3],
            text: st.bitmap_path().to_string_lossy().into_owned(),
        },
        Err(e) => Reply::err(e.raw_os_error().unwrap_or(EINVAL)),
    }
}

fn r<T: Into<i64>>(x: Result<T, Errno>) -> Reply {
    match x {
        Ok(v) => Reply::ok(v.into()),
        Err(e) => Reply::err(errno(e)),
    }
}

fn arg32(a: u64) -> Result<u32, Errno> {
    u32::try_from(a).map_err(|_| Errno::Einval)
}

fn reason(v: u64) -> ShutdownReason {
    match v {
        0 => ShutdownReason::Poweroff,
        1 => ShutdownReason::Reboot,
        2 => ShutdownReason::Suspend,
        4 => ShutdownReason::Watchdog,
        _ => ShutdownReason::Crash,
    }
}

fn handle(st: &mut State, c: &mut Conn, req: Request) -> Reply {
    let Some(op) = Op::from_u32(req.op) else {
        return Reply::err(EINVAL);
    };
    let a = req.args;
    let need_handle = |c: &Conn| c.handle.ok_or(Errno::Einval);
    if matches!(
        op,
        Op::DomainInfo
            | Op::PollChangedDomain
            | Op::GetinfoSingle
            | Op::DyingBitmap
            | Op::DomainList
    ) {
        spend(st.call_cost);
    }
    match op {
        Op::Hello | Op::AttachEvents => Reply::err(EINVAL),
        Op::OpenEvtchn => {
            let h = st.next_handle;
            st.next_handle += 1;
            st.handles.insert(
                h,
                Handle {
                    domid: c.domid,
                    events: None,
                    attached_by: None,
                },
            );
            c.handle = Some(h);
            Reply {
                status: h as i64,
                vals: [0; 3],
                text: crate::protocol::evtchn_name(st.token, h),
            }
        }
        Op::ReopenEvtchn => {
            let (token, h) = (a[0], a[1]);
            match st.handles.get(&h) {
                Some(handle)
                    if token == st.token && handle.domid == c.domid && handle.events.is_some() =>
                {
                    c.handle = Some(h);
                    Reply::ok(h as i64)
                }
                _ => Reply::err(errno(Errno::Einval)),
            }
        }
        Op::BindInterdomain => r((|| {
            let h = need_handle(c)?;
            let p = st
                .hyp
                .bind_interdomain(c.domid, arg32(a[0])?, arg32(a[1])?)?;
            st.owner.insert((c.domid, p), h);
            Ok(p)
        })()),
        Op::BindVirq => r((|| {
            let h = need_handle(c)?;
            let p = st.hyp.bind_virq(c.domid, arg32(a[0])?)?;
            st.owner.insert((c.domid, p), h);
            Ok(p)
        })()),
        Op::AllocUnbound => r((|| {
            let p = st.hyp.alloc_unbound(c.domid, arg32(a[0])?)?;
            if let Some(h) = c.handle {
                st.owner.insert((c.domid, p), h);
            }
            Ok(p)
        })()),
        Op::AllocUnboundFor => r((|| {
            if c.domid != 0 {
                return Err(Errno::Eacces);
            }
            st.hyp.alloc_unbound(arg32(a[0])?, arg32(a[1])?)
        })()),
        Op::Adopt => r((|| {
            let h = need_handle(c)?;
            let p = arg32(a[0])?;
            st.owner.insert((c.domid, p), h);
            Ok(p)
        })()),
        Op::Notify => r(arg32(a[0])
            .and_then(|p| st.hyp.notify(c.domid, p))
            .map(|()| 0)),
        Op::Unmask => r(arg32(a[0]).map(|p| {
            st.hyp.unmask(c.domid, p);
            0
        })),
        Op::Unbind => r((|| {
            let p = arg32(a[0])?;
            let virq = st.hyp.virq_binding() == Some((c.domid, p));
            st.hyp.unbind(c.domid, p)?;
            st.owner.remove(&(c.domid, p));
            if virq {
                for d in std::mem::take(&mut st.destroy_on_virq_unbind) {
                    let _ = st.destroy(d);
                }
                for f in std::mem::take(&mut st.run_on_virq_unbind) {
                    f();
                }
            }
            Ok(0)
        })()),
        Op::GrantMap => {
            let res = (|| {
                let d = arg32(a[0])?;
                if a[1] != 1 || d == c.domid {
                    return Err(Errno::Einval);
                }
                st.hyp.take_ref(d)?;
                Ok(d)
            })();
            match res {
                Ok(d) => {
                    *c.grants.entry(d).or_default() += 1;
                    Reply {
                        status: 0,
                        vals: [0; 3],
                        text: st.ring_path(d).to_string_lossy().into_owned(),
                    }
                }
                Err(e) => Reply::err(errno(e)),
            }
        }
        Op::GrantUnmap => r(arg32(a[0]).map(|d| {
            if let Some(n) = c.grants.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    c.grants.remove(&d);
                }
                st.hyp.drop_ref(d);
            }
            0
        })),
        Op::DomainInfo => match arg32(a[0]).and_then(|d| st.hyp.get_domain_info(d)) {
            Ok(i) => Reply {
                status: 0,
                vals: [u64::from(i.state), u64::from(i.caps), i.unique_id],
                text: String::new(),
            },
            Err(e) => Reply::err(errno(e)),
        },
        Op::GetinfoSingle => match arg32(a[0]).and_then(|d| st.hyp.getinfo_single(d)) {
            Ok(i) => Reply {
                status: 0,
                vals: [
                    u64::from(i.dying),
                    u64::from(i.shutdown),
                    u64::from(i.shutdown_reason),
                ],
                text: String::new(),
            },
            Err(e) => Reply::err(errno(e)),
        },
        Op::DyingBitmap => {
            let bits = st.hyp.dying_bitmap();
            bitmap_reply(st, &bits)
        }
        Op::XenVersion => Reply::ok(i64::from(st.hyp.xen_version())),
        Op::DomainList => {
            let listed = (|| {
                let (v, first, max) = (arg32(a[0])?, arg32(a[1])?, arg32(a[2])?);
                st.hyp.getdomaininfolist(v, first, max)
            })();
            match listed {
                Ok(bytes) => {
                    // One file per connection: calls on one connection are
                    // sequential, and the caller copies it before the next.
                    let path = st.dir.join(format!("domlist-{}", c.id));
                    match std::fs::write(&path, &bytes) {
                        Ok(()) => Reply {
                            status: (bytes.len() / crate::hypervisor::GETDOMAININFO_SIZE) as i64,
                            vals: [0; 3],
                            text: path.to_string_lossy().into_owned(),
                        },
                        Err(e) => Reply::err(e.raw_os_error().unwrap_or(EINVAL)),
                    }
                }
                Err(e) => Reply::err(errno(e)),
            }
        }
        Op::MapDyingBitmap => {
            st.bitmap_mapped = true;
            let bits = st.hyp.dying_bits();
            bitmap_reply(st, &bits)
        }
        Op::BindDeathChannel => r((|| {
            let h = need_handle(c)?;
            let p = st.hyp.bind_death_channel(c.domid, arg32(a[0])?)?;
            st.owner.insert((c.domid, p), h);
            Ok(p)
        })()),
        Op::PollChangedDomain => match st.hyp.poll_changed_domain(c.domid) {
            Ok((d, i)) => Reply {
                status: i64::from(d),
                vals: [u64::from(i.state), u64::from(i.caps), i.unique_id],
                text: String::new(),
            },
            Err(e) => Reply::err(errno(e)),
        },
        Op::CreateDomain => {
            let want = (a[0] != u64::MAX).then(|| arg32(a[0])).transpose();
            match want
                .map_err(errno)
                .and_then(|w| st.create(w, arg32(a[1]).unwrap_or(0)))
            {
                Ok(d) => Reply::ok(i64::from(d)),
                Err(e) => Reply::err(e),
            }
        }
        Op::Shutdown => r(arg32(a[0])
            .and_then(|d| st.hyp.shutdown(d, reason(a[1])))
            .map(|()| 0)),
        Op::Destroy => r(arg32(a[0]).and_then(|d| st.destroy(d)).map(|()| 0)),
        Op::Resume => r(arg32(a[0]).and_then(|d| st.hyp.resume(d)).map(|()| 0)),
        Op::OwnRing => Reply {
            status: 0,
            vals: [0; 3],
            text: st.ring_path(c.domid).to_string_lossy().into_owned(),
        },
        Op::List => {
            let mut text = String::new();
            for d in st.hyp.domains() {
                let i = st.hyp.clone_info(d.domid);
                text.push_str(&format!(
                    "{} {} {} {} {}\n",
                    d.domid, i.state, i.caps, i.unique_id, d.refs
                ));
            }
            Reply {
                status: 0,
                vals: [0; 3],
                text,
            }
        }
        Op::Calls => {
            let k = st.hyp.calls();
            Reply {
                status: 0,
                vals: [k.get_domain_info, k.poll_changed_domain, k.evtchn],
                text: String::new(),
            }
        }
    }
}

/// A running simulator.
pub struct Sim {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in a connection thread poisons the lock; the state itself is
    // still consistent (every operation completes under the lock).
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sim {
    /// Starts a simulator in `dir` (created if needed): dom0 exists with
    /// its ring page and an unbound xenstore port for the local xenstored.
    pub fn start(dir: &Path, seed: u64) -> io::Result<Sim> {
        std::fs::create_dir_all(dir)?;
        let sock = dir.join("sim.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock)?;
        let mut st = State {
            hyp: Hypervisor::new(seed),
            dir: dir.to_path_buf(),
            bitmap_mapped: false,
            call_cost: DEFAULT_CALL_COST,
            next_handle: 1,
            handles: HashMap::new(),
            owner: HashMap::new(),
            token: sim_token(dir),
            destroy_on_virq_unbind: Vec::new(),
            run_on_virq_unbind: Vec::new(),
        };
        st.make_ring(0)?;
        let _ = std::fs::remove_file(dir.join("xsd_kva"));
        std::os::unix::fs::symlink(st.ring_path(0), dir.join("xsd_kva"))?;
        let port = st
            .hyp
            .alloc_unbound(0, 0)
            .map_err(|e| io::Error::other(e.to_string()))?;
        std::fs::write(dir.join("xsd_port"), format!("{port}\n"))?;
        let state = Arc::new(Mutex::new(st));
        let s2 = state.clone();
        std::thread::Builder::new()
            .name("xensim-accept".into())
            .spawn(move || {
                for c in listener.incoming() {
                    let Ok(c) = c else { continue };
                    let s3 = s2.clone();
                    let _ = std::thread::Builder::new()
                        .name("xensim-conn".into())
                        .spawn(move || serve(s3, c));
                }
            })?;
        Ok(Sim {
            dir: dir.to_path_buf(),
            state,
        })
    }

    /// Sets the time each domain-state hypercall costs (default
    /// [`DEFAULT_CALL_COST`]).
    pub fn set_call_cost(&self, d: std::time::Duration) {
        lock(&self.state).call_cost = d;
    }

    /// The server socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("sim.sock")
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a domain with its ring page (as the toolstack's domain
    /// builder would); `want` asks for a specific domid.
    pub fn create_domain(&self, want: Option<u32>, caps: u32) -> io::Result<u32> {
        let mut st = lock(&self.state);
        let r = st.create(want, caps).map_err(io::Error::from_raw_os_error);
        st.deliver();
        r
    }

    /// Destroys a domain (`xl destroy`).
    pub fn destroy_domain(&self, domid: u32) -> io::Result<()> {
        let mut st = lock(&self.state);
        let r = st
            .destroy(domid)
            .map_err(|e| io::Error::from_raw_os_error(errno(e)));
        st.deliver();
        r
    }

    /// Destroys `domid` the moment the holder of `VIRQ_DOM_EXC` unbinds it
    /// (as a live-updating xenstored does right before its exec): a death
    /// its next binary can only learn by looking (no event is raised for
    /// it while nothing is bound). Once.
    pub fn destroy_when_virq_unbound(&self, domid: u32) {
        lock(&self.state).destroy_on_virq_unbind.push(domid);
    }

    /// Runs `f` (a guest writing into its ring page, say) the moment the
    /// holder of `VIRQ_DOM_EXC` unbinds it: during a live update's switch.
    /// Once.
    pub fn when_virq_unbound(&self, f: impl FnOnce() + Send + 'static) {
        lock(&self.state).run_on_virq_unbind.push(Box::new(f));
    }

    /// The path of a domain's ring page.
    pub fn ring_path(&self, domid: u32) -> PathBuf {
        lock(&self.state).ring_path(domid)
    }

    /// Runs `f` on the hypervisor (tests, reports), then delivers events.
    pub fn with<R>(&self, f: impl FnOnce(&mut Hypervisor) -> R) -> R {
        let mut st = lock(&self.state);
        let r = f(&mut st.hyp);
        st.deliver();
        r
    }
}

/// A token naming this simulator's event connections: its process, its
/// directory and the time it started.
fn sim_token(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::process::id().hash(&mut h);
    dir.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    NEXT_CONN
        .load(std::sync::atomic::Ordering::Relaxed)
        .hash(&mut h);
    h.finish() >> 8
}

fn serve(state: Arc<Mutex<State>>, mut s: UnixStream) {
    let Ok(hello) = Request::read_from(&mut s) else {
        return;
    };
    let mut c = Conn {
        domid: u32::try_from(hello.args[0]).unwrap_or(u32::MAX),
        handle: None,
        id: NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        grants: HashMap::new(),
    };
    match Op::from_u32(hello.op) {
        Some(Op::Hello) => {
            if Reply::ok(0).write_to(&mut s).is_err() {
                return;
            }
        }
        Some(Op::AttachEvents) => {
            let h = hello.args[0];
            {
                let mut st = lock(&state);
                let ok = match (st.handles.get_mut(&h), s.try_clone()) {
                    (Some(handle), Ok(clone)) if handle.events.is_none() => {
                        handle.events = Some(clone);
                        handle.attached_by = Some(c.id);
                        true
                    }
                    _ => false,
                };
                let reply = if ok { Reply::ok(0) } else { Reply::err(EINVAL) };
                let _ = reply.write_to(&mut s);
                st.deliver();
                if !ok {
                    return;
                }
            }
            // The handle lives as long as its event connection: until the
            // last descriptor of the other end closes (xenevtchn_close,
            // process exit, exec of a close-on-exec descriptor), wherever
            // it was inherited.
            let mut b = [0u8; 64];
            loop {
                match s.read(&mut b) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let mut st = lock(&state);
            if st.handles.get(&h).and_then(|x| x.attached_by) == Some(c.id) {
                st.close_handle(h);
                st.deliver();
            }
            return;
        }
        _ => return,
    }
    while let Ok(req) = Request::read_from(&mut s) {
        let reply = {
            let mut st = lock(&state);
            let reply = handle(&mut st, &mut c, req);
            st.deliver();
            reply
        };
        if reply.write_to(&mut s).is_err() {
            break;
        }
    }
    let mut st = lock(&state);
    // A handle whose event connection never came closes with this one;
    // one with an event connection lives as long as that.
    if let Some(h) = c.handle {
        if st.handles.get(&h).is_some_and(|x| x.events.is_none()) {
            st.close_handle(h);
        }
    }
    for (d, n) in c.grants {
        for _ in 0..n {
            st.hyp.drop_ref(d);
        }
    }
    st.deliver();
}
