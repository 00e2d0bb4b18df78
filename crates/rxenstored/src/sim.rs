//! `--sim`: the daemon on the built-in hypervisor simulator.
//!
//! The simulator runs in this process; the daemon reaches it through the
//! stand-in libraries built next to its executable, loaded by the very
//! code that loads Xen's libraries on a real host. A background thread
//! plays the toolstack and the guests: it creates and introduces guests,
//! each guest keeps writing a heartbeat over its ring, and with churn the
//! oldest guest is destroyed and a new one created every few seconds.
//!
//! The simulator is built in with the cargo feature `sim` (on by default);
//! a build without it (`--no-default-features`, as a distribution package
//! may be) carries none of it, and `--sim` answers with one error line.

pub use imp::*;

#[cfg(feature = "sim")]
mod imp {
    use std::path::{Path, PathBuf};
    use xensim::Sim;

    /// A running simulator and where its stand-ins are.
    pub struct SimHost {
        sim: Sim,
        /// The simulator's directory.
        pub dir: PathBuf,
        /// The directory holding the stand-ins under their sonames.
        pub lib_dir: PathBuf,
    }

    /// Starts the simulator. Must run before any other thread exists: it sets
    /// `XENSIM_SOCKET` for the stand-ins.
    pub fn start(opts: &crate::cli::Options) -> Result<SimHost, String> {
        let dir = opts.sim_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("rxenstored-sim-{}", std::process::id()))
        });
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let built = exe.parent().ok_or("no executable directory")?;
        let (major, minor) = opts.sim_xen_version;
        // Xen before 4.21 ships no libxenmanage.
        let without: &[&str] = if (major, minor) < (4, 21) {
            &["libxenmanage"]
        } else {
            &[]
        };
        let lib_dir = xensim::stand_ins::link(built, &dir.join("lib"), without)
            .map_err(|e| format!("{e} (with --release, `cargo build --release --workspace`)"))?;
        std::env::set_var(xensim::protocol::ENV_SOCKET, dir.join("sim.sock"));
        std::env::set_var(xensim::protocol::ENV_DOMID, "0");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let sim = Sim::start(&dir, seed).map_err(|e| format!("{}: {e}", dir.display()))?;
        sim.with(|h| h.set_version(major, minor));
        tracing::info!(
            "simulator of Xen {major}.{minor} in {} (stand-ins in {})",
            dir.display(),
            lib_dir.display()
        );
        Ok(SimHost { sim, dir, lib_dir })
    }

    impl SimHost {
        /// Starts the toolstack-and-guests thread (once the daemon listens on
        /// `socket`).
        pub fn run_host(&self, socket: &Path, guests: u32, churn_secs: u64) {
            let sim_socket = self.sim.socket();
            let socket = socket.to_path_buf();
            let spawned = std::thread::Builder::new()
                .name("sim-host".into())
                .spawn(move || {
                    let log = |what: &str| tracing::info!("simulated host: {what}");
                    if let Err(e) =
                        xensim::toolstack::run_guests(&sim_socket, &socket, guests, churn_secs, log)
                    {
                        tracing::warn!("simulated host stopped: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start the simulated host: {e}");
            }
        }
    }
}

#[cfg(not(feature = "sim"))]
mod imp {
    use std::path::{Path, PathBuf};

    /// Never made: this build has no simulator.
    pub struct SimHost {
        /// The simulator's directory.
        pub dir: PathBuf,
        /// The directory holding the stand-ins under their sonames.
        pub lib_dir: PathBuf,
    }

    /// This build has no simulator: an error saying so.
    pub fn start(_opts: &crate::cli::Options) -> Result<SimHost, String> {
        Err("this rxenstored was built without the simulator (cargo feature `sim`)".to_owned())
    }

    impl SimHost {
        /// Nothing to run.
        pub fn run_host(&self, _socket: &Path, _guests: u32, _churn_secs: u64) {}
    }
}
