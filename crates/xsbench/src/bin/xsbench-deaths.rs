//! xsbench-deaths: how much it costs xenstored to find the dead domain,
//! by strategy, as the number of domains grows (issue 4).
//!
//! For each strategy and size N it starts a simulator and a daemon
//! (`rxenstored --domain-state <strategy>` on the simulator's stand-ins),
//! introduces N domains, lets one death drain the creation backlog, then
//! destroys domains one at a time and records per death: hypervisor
//! domain-state calls (counted by the simulator), the modelled hypervisor
//! time (calls x cost per call), the daemon's CPU time (schedstat), and the
//! latency from destroy to the `@releaseDomain/<domid>` event at a watcher.
//! A churn run then creates and destroys domains back to back for a few
//! seconds and reports deaths handled per second. Output: CSV on stdout.

use clap::Parser;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xensim::{Sim, Toolstack};
use xenstore_client::{Client, Tx};
use xenstore_proto::MsgType;

/// Cost of finding the dead domain, by strategy and number of domains.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The rxenstored binary (default: next to this program).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Strategies to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "poll,getdomaininfolist,legacy,bitmap,mapped,channel"
    )]
    strategies: Vec<String>,
    /// Numbers of live introduced guest domains. 32751 is the most there
    /// can be: with dom0 they use all 32752 domids below DOMID_FIRST_RESERVED.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000,32751")]
    sizes: Vec<usize>,
    /// Deaths measured per point.
    #[arg(long, default_value_t = 20)]
    deaths: usize,
    /// Cost of one domain-state hypercall in the simulator, microseconds.
    #[arg(long, default_value_t = 2.0)]
    call_cost_us: f64,
    /// Seconds of churn per point (0: none).
    #[arg(long, default_value_t = 3.0)]
    churn_secs: f64,
    /// Largest N with a churn run (creating domains at large N is slow in
    /// the simulator).
    #[arg(long, default_value_t = 10000)]
    churn_max_n: usize,
    /// Work directory (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A `@releaseDomain` watcher (`xenstore-client` over the socket).
struct Watcher {
    xs: Client<UnixStream>,
}

impl Watcher {
    fn new(socket: &Path) -> std::io::Result<Watcher> {
        let mut xs = Client::new(UnixStream::connect(socket)?);
        // WATCH @releaseDomain, token "w", depth 1: per-domain events.
        xs.call(
            MsgType::Watch,
            Tx::NONE,
            &[&b"@releaseDomain\0w\0"[..], b"1\0"].concat(),
        )
        .map_err(io_err)?;
        xs.next_event().map_err(io_err)?; // the initial event
        Ok(Watcher { xs })
    }

    /// Waits for `@releaseDomain/<domid>`.
    fn wait_release(&mut self, domid: u32) -> std::io::Result<()> {
        let want = format!("@releaseDomain/{domid}");
        self.xs
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(120)))?;
        loop {
            if self.xs.next_event().map_err(io_err)?.path == want {
                return Ok(());
            }
        }
    }
}

fn io_err(e: xenstore_client::Error) -> std::io::Error {
    match e {
        xenstore_client::Error::Io(e) => e,
        e => std::io::Error::other(e),
    }
}

/// Nanoseconds the process has run on a CPU.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn start_daemon(
    exe: &Path,
    dir: &Path,
    sim: &Sim,
    libs: &Path,
    strategy: &str,
) -> std::io::Result<(Child, PathBuf)> {
    let socket = dir.join("xs.sock");
    let child = Command::new(exe)
        .args(["-N", "--socket"])
        .arg(&socket)
        .arg("--xen-lib-dir")
        .arg(libs)
        .args(["--domain-state", strategy, "--xsd-kva"])
        .arg(dir.join("none"))
        .env(xensim::protocol::ENV_SOCKET, sim.socket())
        .env("RXENSTORED_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = UnixStream::connect(&socket) {
            if Client::new(s).read(Tx::NONE, "/").is_ok() {
                return Ok((child, socket));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(std::io::Error::other("daemon did not start"))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn run_point(
    args: &Args,
    exe: &Path,
    base: &Path,
    strategy: &str,
    n: usize,
) -> std::io::Result<String> {
    let dir = base.join(format!("{strategy}-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sim = Sim::start(&dir.join("sim"), 0xD0D0 + n as u64)?;
    sim.set_call_cost(Duration::from_secs_f64(args.call_cost_us / 1e6));
    let built = exe
        .parent()
        .ok_or_else(|| std::io::Error::other("no daemon dir"))?;
    let libs = xensim::stand_ins::link(built, &dir.join("lib"), &[])?;
    let (mut child, socket) = start_daemon(exe, &dir, &sim, &libs, strategy)?;
    let result = (|| {
        let mut ts = Toolstack::new(&sim.socket(), &socket)?;
        let mut w = Watcher::new(&socket)?;
        let t = Instant::now();
        let mut doms = Vec::with_capacity(n);
        for i in 0..n {
            doms.push(ts.create_headless(&format!("d{i}"))?);
        }
        let create_s = t.elapsed().as_secs_f64();
        // One death drains the feed's creation backlog.
        let first = doms.remove(0);
        ts.destroy(first)?;
        w.wait_release(first)?;
        let deaths = args.deaths.min(doms.len());
        let calls0 = sim.with(|h| h.calls());
        let cpu0 = cpu_ns(child.id());
        let mut lat = Vec::with_capacity(deaths);
        let step = (doms.len() / deaths.max(1)).max(1);
        let victims: Vec<u32> = doms.iter().step_by(step).take(deaths).copied().collect();
        for &d in &victims {
            let t = Instant::now();
            ts.destroy(d)?;
            w.wait_release(d)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let calls = sim.with(|h| h.calls());
        let cpu = cpu_ns(child.id()) - cpu0;
        let k = victims.len().max(1) as f64;
        let ds = (calls.domain_state() - calls0.domain_state()) as f64 / k;
        let ev = (calls.evtchn - calls0.evtchn) as f64 / k;
        let bytes = (calls.getdomaininfolist_bytes - calls0.getdomaininfolist_bytes) as f64 / k;
        let model_us = ds * args.call_cost_us;
        // Churn: create one, destroy the oldest, until the time is up.
        let mut churn = f64::NAN;
        if args.churn_secs > 0.0 && n <= args.churn_max_n {
            let mut live: std::collections::VecDeque<u32> = doms
                .iter()
                .copied()
                .filter(|d| !victims.contains(d))
                .collect();
            let t = Instant::now();
            let mut count = 0u64;
            while t.elapsed().as_secs_f64() < args.churn_secs {
                let nd = ts.create_headless("churn")?;
                live.push_back(nd);
                if let Some(old) = live.pop_front() {
                    ts.destroy(old)?;
                    w.wait_release(old)?;
                    count += 1;
                }
            }
            churn = count as f64 / t.elapsed().as_secs_f64();
        }
        Ok(format!(
            "{strategy},{n},{},{ds:.2},{ev:.2},{model_us:.1},{:.1},{:.3},{:.3},{churn:.1},{create_s:.2},{bytes:.0}",
            victims.len(),
            cpu as f64 / 1e3 / k,
            percentile(&mut lat.clone(), 0.5),
            percentile(&mut lat, 0.9),
        ))
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() {
    let args = Args::parse();
    let exe = args.daemon.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.join("rxenstored")))
            .unwrap_or_else(|| PathBuf::from("rxenstored"))
    });
    let base = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("xsbench-deaths-{}", std::process::id()))
    });
    println!(
        "# call cost {} us per domain-state hypercall; {} deaths per point; latency destroy -> @releaseDomain/<domid> at a watcher",
        args.call_cost_us, args.deaths
    );
    println!("strategy,n,deaths,hv_calls_per_death,evtchn_ops_per_death,hv_model_us_per_death,daemon_cpu_us_per_death,latency_ms_p50,latency_ms_p90,churn_deaths_per_s,create_s,list_bytes_per_death");
    for n in &args.sizes {
        for s in &args.strategies {
            match run_point(&args, &exe, &base, s, *n) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("xsbench-deaths: {s} at {n}: {e}");
                    println!("{s},{n},error,,,,,,,,,");
                }
            }
            let _ = std::io::stdout().flush();
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
