//! rxenstored: the Xenstore daemon.
//!
//! Start-up follows C xenstored's contract with the scripts that launch
//! it: by default the process forks (here: re-executes itself detached,
//! in a new session) and the command returns once the daemon serves, with
//! the pid file already holding the daemon's pid; `-N` stays in the
//! foreground. Readiness is also sent to systemd (`READY=1`) when
//! `NOTIFY_SOCKET` is set.

use rxenstored::cli::{self, Options};
use rxenstored::{config, logging, notify, server, sim, xen};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use xenstore_store::StoreConfig;

const READY_LINE: &str = "READY";

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os().collect()) {
        Ok(l) => l,
        Err(config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("rxenstored: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = loaded.options;
    if opts.version {
        print_version(&opts);
        return ExitCode::SUCCESS;
    }
    // A live update's new binary runs in the process of the old one.
    if !opts.no_fork && !opts.daemon_child && !opts.live_update {
        return spawn_daemon(&opts);
    }
    match run(&opts, &loaded.notes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("rxenstored: {msg}");
            tracing::error!("{msg}");
            if opts.daemon_child && !opts.live_update {
                println!("ERROR {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The parent side of forking: start the daemon detached and wait until
/// it reports that it serves (or failed).
fn spawn_daemon(opts: &Options) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("rxenstored: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--internal-daemon-child")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rxenstored: cannot start the daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    let Some(out) = child.stdout.take() else {
        return ExitCode::FAILURE;
    };
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    if line.trim_end() == READY_LINE {
        if opts.output_pid {
            println!("{pid}");
        }
        return ExitCode::SUCCESS;
    }
    let _ = child.wait();
    let msg = line
        .trim_end()
        .strip_prefix("ERROR ")
        .unwrap_or("the daemon exited during start-up");
    eprintln!("rxenstored: {msg}");
    ExitCode::FAILURE
}

/// `--version`: the build, then what this host offers. A closed standard
/// output (`| head -1`) ends the listing quietly.
fn print_version(opts: &Options) {
    let mut lines = vec![
        format!("rxenstored {}", env!("CARGO_PKG_VERSION")),
        format!(
            "built with: simulator (--sim) {}",
            if cfg!(feature = "sim") { "yes" } else { "no" }
        ),
    ];
    if opts.no_xen {
        lines.push("Xen: not used (--no-xen)".into());
    } else {
        let dir = opts.xen_lib_dir.as_deref();
        lines.push(format!(
            "Xen interfaces on this host (libraries from {}):",
            dir.map_or_else(
                || "the system's search path".into(),
                |d| d.display().to_string()
            )
        ));
        let libs = xen_stable::libs::XenLibs::new(dir);
        lines.extend(rxenstored::domain_state::host_report(&libs));
    }
    let mut out = std::io::stdout().lock();
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return;
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn run(opts: &Options, notes: &[String]) -> Result<(), String> {
    // Forked without a log file, standard error is gone: syslog then.
    // A take-over from C xenstored without -N: C forked and its standard
    // error is gone too.
    let detached = opts.daemon_child || (opts.live_update && !opts.no_fork);
    let log = if detached && opts.log_file.is_none() {
        logging::LogTarget::syslog(Path::new(logging::SYSLOG_SOCKET))
    } else {
        logging::LogTarget::new(opts.log_file.as_deref().map(absolute))
            .map_err(|e| format!("cannot open log file: {e}"))?
    };
    log.install(opts.verbose);
    for n in notes {
        tracing::info!("{n}");
    }
    for w in opts.ignored_c_options() {
        tracing::warn!("{w}");
    }
    if opts.daemon_child && !opts.live_update {
        // Detach from the caller's session and terminal.
        rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
    }
    let quota = opts.quotas().map_err(|e| e.to_string())?;
    let timeout = opts.watch_event_timeout().map_err(|e| e.to_string())?;
    let priv_domid = opts.priv_domid.unwrap_or(0);
    let store_domid = opts.master_domid.unwrap_or(0);
    let socket = absolute(&opts.socket_path());
    let sim = if opts.sim {
        Some(sim::start(opts).map_err(|e| format!("simulator: {e}"))?)
    } else {
        None
    };
    let cfg = server::ServerConfig {
        socket: socket.clone(),
        store: StoreConfig {
            priv_domid,
            store_domid,
            quota,
            keep_orphans: opts.keep_orphans,
        },
        trace_file: opts.trace_file.as_deref().map(absolute),
        trace_control: opts.trace_control.clone(),
        file_base: PathBuf::from("/var/lib/xen/xenstore"),
        watch_event_timeout: (timeout > 0).then(|| std::time::Duration::from_secs(timeout)),
        xen: (!opts.no_xen).then(|| xen::XenConfig {
            lib_dir: sim
                .as_ref()
                .map(|s| s.lib_dir.clone())
                .or_else(|| opts.xen_lib_dir.clone()),
            xsd_kva: sim
                .as_ref()
                .map_or_else(|| opts.xsd_kva.clone(), |s| s.dir.join("xsd_kva")),
            xsd_port: sim
                .as_ref()
                .map_or_else(|| opts.xsd_port.clone(), |s| s.dir.join("xsd_port")),
            event: opts.event.filter(|_| sim.is_none()),
            strategy: match opts.domain_state {
                cli::DomainStateArg::Auto => None,
                cli::DomainStateArg::Poll => Some(xen::Strategy::Poll),
                cli::DomainStateArg::Getdomaininfolist => Some(xen::Strategy::DomainList),
                cli::DomainStateArg::None => Some(xen::Strategy::NoState),
                cli::DomainStateArg::Legacy => Some(xen::Strategy::Legacy),
                cli::DomainStateArg::Bitmap => Some(xen::Strategy::Bitmap),
                cli::DomainStateArg::Mapped => Some(xen::Strategy::Mapped),
                cli::DomainStateArg::Channel => Some(xen::Strategy::Channel),
            },
        }),
    };
    let started = if opts.live_update {
        server::Server::take_over(cfg)
    } else {
        server::Server::new(cfg)
    };
    let mut srv = match started {
        Ok(s) => s,
        Err(server::StartError::Refused(why)) => return Err(take_over_refused(opts, &why)),
        Err(e) => return Err(e.to_string()),
    };
    let log2 = log.clone();
    srv.on_hangup(Box::new(move || {
        let _ = log2.reopen();
    }));
    let pid_file = opts.pid_file.as_deref().map(absolute);
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", p.display()))?;
    }
    tracing::info!(
        "serving on {} (priv domid {priv_domid}, store domid {store_domid})",
        socket.display()
    );
    // After a live update the daemon is already ready in the eyes of
    // whoever started the first binary, and nobody waits on its output.
    if !opts.live_update {
        if let Err(e) = notify::ready() {
            tracing::warn!("cannot notify systemd: {e}");
        }
    }
    if opts.live_update {
        tracing::info!("live update: serving in process {}", std::process::id());
    } else if opts.daemon_child {
        println!("{READY_LINE}");
        let _ = std::io::stdout().flush();
        // Standard output was the pipe to the parent: point it at /dev/null.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
    } else if opts.output_pid {
        println!("{}", std::process::id());
    }
    if let Some(s) = &sim {
        s.run_host(&socket, opts.sim_guests, opts.sim_churn);
    }
    let r = srv.run();
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    r.map_err(|e| format!("event loop failed: {e}"))
}

/// A take-over whose state was refused before anything was taken: the
/// binary before has already gone (its process is this one), so the host
/// would be left without a xenstored. The state file and every descriptor
/// are as it left them: a fallback binary (`--fallback-xenstored`, else
/// C xenstored where Debian installs it) is run in this process with the
/// same state, as the live update's new binary. Returns only if none can
/// be run.
fn take_over_refused(opts: &Options, why: &str) -> String {
    use std::os::unix::process::CommandExt;
    tracing::error!("{why}");
    let Some(bin) = rxenstored::live_update::fallback_binary(opts.fallback_xenstored.as_deref())
    else {
        return format!("{why}; no fallback xenstored found: the host has no xenstored now");
    };
    let argv: Vec<std::ffi::OsString> = if rxenstored::live_update::is_c_binary(&bin) {
        opts.c_argv()
    } else {
        std::env::args_os().skip(1).collect()
    };
    tracing::error!(
        "live update: running {} {:?} on the same state instead",
        bin.display(),
        argv
    );
    let err = Command::new(&bin).args(&argv).exec();
    format!(
        "{why}; the fallback {} could not be run: {err}",
        bin.display()
    )
}
