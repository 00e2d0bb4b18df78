//! `xensim`: run the hypervisor simulator, and act on it as a toolstack.
//!
//! ```text
//! xensim serve DIR                 run a simulator in DIR (foreground)
//! xensim create NAME [--keep]      create and introduce a guest
//! xensim shutdown DOMID [REASON]   the guest shuts down (poweroff, reboot, suspend, crash)
//! xensim destroy DOMID             xl destroy
//! xensim release DOMID             RELEASE (soft reset)
//! xensim run-guests N [--churn S]  N guests with a heartbeat workload
//! xensim list                      domains and their state
//! ```
//!
//! Commands other than `serve` find the simulator with `XENSIM_SOCKET`
//! (or `--sim`) and xenstored with `XENSTORED_PATH` (or `--xenstored`).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use xensim::hypervisor::state;
use xensim::protocol::Op;
use xensim::{Client, ShutdownReason, Sim, Toolstack};

#[derive(Parser)]
#[command(version, about = "Xen hypervisor simulator and toolstack")]
struct Cli {
    /// The simulator's socket.
    #[arg(long, env = "XENSIM_SOCKET", global = true)]
    sim: Option<PathBuf>,
    /// xenstored's socket.
    #[arg(long, env = "XENSTORED_PATH", global = true)]
    xenstored: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a simulator in DIR until interrupted.
    Serve {
        /// Directory for the socket and ring pages.
        dir: PathBuf,
    },
    /// Create a guest and introduce it to xenstored. The guest's side of
    /// the connection lives as long as this command (`--keep`: until
    /// interrupted, writing a heartbeat).
    Create {
        /// The guest's name.
        name: String,
        /// Stay, keeping the guest's connection alive.
        #[arg(long)]
        keep: bool,
    },
    /// The guest's shutdown completes.
    Shutdown {
        /// The domain.
        domid: u32,
        /// poweroff, reboot, suspend, crash or watchdog.
        #[arg(default_value = "poweroff")]
        reason: String,
    },
    /// Destroy a domain.
    Destroy {
        /// The domain.
        domid: u32,
    },
    /// Send RELEASE for a domain.
    Release {
        /// The domain.
        domid: u32,
    },
    /// Run N guests that write a heartbeat every second; with --churn,
    /// destroy the oldest and create a new one every SECS seconds.
    RunGuests {
        /// How many guests.
        n: u32,
        /// Churn period in seconds (0: none).
        #[arg(long, default_value_t = 0)]
        churn: u64,
    },
    /// List the simulator's domains.
    List,
}

fn reason(s: &str) -> Option<ShutdownReason> {
    Some(match s {
        "poweroff" => ShutdownReason::Poweroff,
        "reboot" => ShutdownReason::Reboot,
        "suspend" => ShutdownReason::Suspend,
        "crash" => ShutdownReason::Crash,
        "watchdog" => ShutdownReason::Watchdog,
        _ => return None,
    })
}

fn run(cli: Cli) -> Result<(), String> {
    let sim = || {
        cli.sim
            .clone()
            .ok_or("no simulator: set XENSIM_SOCKET or --sim")
    };
    let xs = || {
        cli.xenstored
            .clone()
            .ok_or("no xenstored: set XENSTORED_PATH or --xenstored")
    };
    let ts = || -> Result<Toolstack, String> {
        Toolstack::new(&sim()?, &xs()?).map_err(|e| e.to_string())
    };
    match &cli.cmd {
        Cmd::Serve { dir } => {
            let s = Sim::start(dir, std::process::id().into()).map_err(|e| e.to_string())?;
            println!("XENSIM_SOCKET={}", s.socket().display());
            loop {
                std::thread::park();
            }
        }
        Cmd::Create { name, keep } => {
            let mut t = ts()?;
            let mut g = t.create(name).map_err(|e| e.to_string())?;
            println!("{}", g.domid);
            if !*keep {
                return Ok(());
            }
            let mut beat = 0u64;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                beat += 1;
                let mut p = b"data/heartbeat\0".to_vec();
                p.extend_from_slice(beat.to_string().as_bytes());
                g.request(xenstore_proto::MsgType::Write, 0, &p)
                    .map_err(|e| e.to_string())?;
            }
        }
        Cmd::Shutdown { domid, reason: r } => {
            let why = reason(r).ok_or_else(|| format!("unknown reason {r:?}"))?;
            ts()?.shutdown(*domid, why).map_err(|e| e.to_string())
        }
        Cmd::Destroy { domid } => ts()?.destroy(*domid).map_err(|e| e.to_string()),
        Cmd::Release { domid } => ts()?.release(*domid).map_err(|e| e.to_string()),
        Cmd::RunGuests { n, churn } => {
            xensim::toolstack::run_guests(&sim()?, &xs()?, *n, *churn, |e| println!("{e}"))
                .map_err(|e| e.to_string())
        }
        Cmd::List => {
            let mut c = Client::connect(&sim()?, 0).map_err(|e| e.to_string())?;
            let r = c.call(Op::List, &[]).map_err(|e| e.to_string())?;
            println!(
                "{:>6} {:<10} {:>20} {:>5}",
                "domid", "state", "unique_id", "maps"
            );
            for line in r.text.lines() {
                let f: Vec<u64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
                let [d, st, _caps, uid, refs] = f[..] else {
                    continue;
                };
                let st = st as u32;
                let name = if st & state::DEAD != 0 {
                    "dead"
                } else if st & state::DYING != 0 {
                    "dying"
                } else if st & state::SHUTDOWN != 0 {
                    "shutdown"
                } else {
                    "running"
                };
                println!("{d:>6} {name:<10} {uid:>20} {refs:>5}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xensim: {e}");
            ExitCode::FAILURE
        }
    }
}
