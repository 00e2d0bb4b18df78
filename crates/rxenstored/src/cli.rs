//! Command line, compatible with C xenstored's options.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use xenstore_store::quota::{Quota, QuotaSet};

/// rxenstored: a Xenstore daemon using only stable Xen interfaces.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rxenstored",
    version,
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    about = "Xenstore daemon (drop-in for C xenstored) using only stable Xen interfaces",
    long_about = "rxenstored keeps the Xenstore database of a Xen host: the toolstack, device \
backends and every guest exchange configuration and status through it, with watches, \
transactions, per-domain permissions and quotas. Guests reach it over a shared ring page and an \
event channel, dom0 tools over a Unix socket. It takes C xenstored's options and is started the \
same way (XENSTORED in /etc/default/xen, /etc/default/xencommons or /etc/sysconfig/xencommons). \
By default it forks and returns once it serves, with the pid file written; with -N it stays in \
the foreground. It notifies systemd (READY=1) when NOTIFY_SOCKET is set.",
    after_long_help = "FILES:\n  /etc/xen/rxenstored.toml  settings (keys are the long option \
names), read when present\n  /etc/xen/oxenstored.conf  oxenstored's settings, read with \
--oxenstored-conf\n  /run/xenstored/socket  the socket, unless XENSTORED_PATH or \
XENSTORED_RUNDIR say otherwise\n\nSIGNALS:\n  SIGHUP  reopen the log file and the trace file \
(log rotation)\n  SIGTERM, SIGINT  stop\n\nLOGGING:\n  --log-file if given; otherwise syslog \
(facility daemon) once forked, standard error with -N. RXENSTORED_LOG takes a tracing filter \
(e.g. debug).\n\nSee /usr/share/doc/rxenstored for the differences from C xenstored \
(compat.md)."
)]
pub struct Options {
    /// Do not fork: stay in the foreground.
    #[arg(short = 'N', long = "no-fork")]
    pub no_fork: bool,

    /// Write the daemon's pid to FILE.
    #[arg(short = 'F', long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Print the daemon's pid on standard output once it runs.
    #[arg(short = 'P', long = "output-pid")]
    pub output_pid: bool,

    /// Access log: every request and reply (`CONTROL log` switches it).
    #[arg(short = 'T', long = "trace-file", value_name = "FILE")]
    pub trace_file: Option<PathBuf>,

    /// Trace switches: +io, -io, +obj, -obj (repeatable).
    #[arg(
        long = "trace-control",
        value_name = "[+-]SWITCH",
        allow_hyphen_values = true
    )]
    pub trace_control: Vec<String>,

    /// Daemon log file, reopened on SIGHUP. Default: syslog (facility
    /// daemon) once forked, standard error with -N.
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Quota: nodes per domain.
    #[arg(short = 'E', long = "entry-nb", value_name = "NB")]
    pub entry_nb: Option<u64>,

    /// Quota: accounted size of one node (bytes).
    #[arg(short = 'S', long = "entry-size", value_name = "SIZE")]
    pub entry_size: Option<u64>,

    /// Quota: watches per domain.
    #[arg(short = 'W', long = "watch-nb", value_name = "NB")]
    pub watch_nb: Option<u64>,

    /// Quota: transactions per domain.
    #[arg(short = 't', long = "transaction", value_name = "NB")]
    pub transaction: Option<u64>,

    /// Quota: permission entries per node.
    #[arg(short = 'A', long = "perm-nb", value_name = "NB")]
    pub perm_nb: Option<u64>,

    /// Quota: path length (at most 2048).
    #[arg(short = 'M', long = "path-max", value_name = "CHARS")]
    pub path_max: Option<u64>,

    /// Hard quota WHAT=NB (nodes, watches, outstanding, memory,
    /// transactions, transaction-nodes, node-permissions, path-max,
    /// node-size). Repeatable.
    #[arg(short = 'Q', long = "quota", value_name = "WHAT=NB")]
    pub quota: Vec<String>,

    /// Soft quota WHAT=NB (memory): a warning only. Repeatable.
    #[arg(short = 'q', long = "quota-soft", value_name = "WHAT=NB")]
    pub quota_soft: Vec<String>,

    /// Timeout WHAT=SECONDS (watch-event). Repeatable.
    #[arg(short = 'w', long = "timeout", value_name = "WHAT=SECONDS")]
    pub timeout: Vec<String>,

    /// Keep a removed domain's nodes, owned by the privileged domain
    /// (a security risk).
    #[arg(short = 'K', long = "keep-orphans")]
    pub keep_orphans: bool,

    /// The privileged domain (default 0).
    #[arg(short = 'p', long = "priv-domid", value_name = "DOMID")]
    pub priv_domid: Option<u32>,

    /// The domain xenstored runs in (default 0).
    #[arg(short = 'm', long = "master-domid", value_name = "DOMID")]
    pub master_domid: Option<u32>,

    /// Socket path (default: $XENSTORED_PATH, else $XENSTORED_RUNDIR/socket,
    /// else /run/xenstored/socket).
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Load Xen's stable libraries (libxenevtchn.so.1, libxengnttab.so.1,
    /// libxenmanage.so.1) from DIR instead of the system paths (e.g. the
    /// simulator's stand-ins).
    #[arg(
        long = "xen-lib-dir",
        value_name = "DIR",
        env = "RXENSTORED_XEN_LIB_DIR"
    )]
    pub xen_lib_dir: Option<PathBuf>,

    /// Run on the built-in hypervisor simulator (xensim) instead of Xen:
    /// its stand-in libraries (built next to this executable) are loaded
    /// through the same code as Xen's, and a few simulated guests live on
    /// the host.
    #[arg(long = "sim")]
    pub sim: bool,

    /// Directory for the simulator's socket and ring pages (with --sim).
    #[arg(long = "sim-dir", value_name = "DIR")]
    pub sim_dir: Option<PathBuf>,

    /// Number of simulated guests (with --sim).
    #[arg(long = "sim-guests", value_name = "N", default_value_t = 3)]
    pub sim_guests: u32,

    /// The Xen release the simulator plays (with --sim), MAJOR.MINOR:
    /// before 4.21 its host has no libxenmanage, as real hosts, and the
    /// daemon learns domain state from the domain list.
    #[arg(long = "sim-xen-version", value_name = "MAJOR.MINOR", default_value = "4.21", value_parser = parse_xen_version)]
    pub sim_xen_version: (u32, u32),

    /// Every SECS seconds, destroy the oldest guest and create a new one
    /// (with --sim; 0: never).
    #[arg(long = "sim-churn", value_name = "SECS", default_value_t = 20)]
    pub sim_churn: u64,

    /// The local domain's ring page.
    #[arg(
        long = "xsd-kva",
        value_name = "PATH",
        default_value = "/proc/xen/xsd_kva"
    )]
    pub xsd_kva: PathBuf,

    /// The local domain's xenstore event channel port.
    #[arg(
        long = "xsd-port",
        value_name = "PATH",
        default_value = "/proc/xen/xsd_port"
    )]
    pub xsd_port: PathBuf,

    /// How to learn which domain exists and which changed state: `auto`
    /// (default: libxenmanage when the hypervisor answers it, Xen 4.21+;
    /// else the domain list through libxencall when the hypervisor's
    /// version is known, Xen 4.17 to 4.22; else none), `poll`
    /// (libxenmanage's changed-domain feed), `getdomaininfolist` (the list
    /// of domains through libxencall), `none` (deaths only through
    /// RELEASE), or, on the simulator only and for measurements, `legacy`
    /// (a query per known domain), `bitmap`, `mapped` or `channel`.
    #[arg(long = "domain-state", value_enum, default_value_t = DomainStateArg::Auto)]
    pub domain_state: DomainStateArg,

    /// Do not use Xen at all: serve the Unix socket only.
    #[arg(long = "no-xen")]
    pub no_xen: bool,

    /// C xenstored's `-D` / `--no-domain-init` (4.17): accepted and
    /// ignored (rxenstored always serves the domains it can).
    #[arg(short = 'D', long = "no-domain-init", hide = true)]
    pub no_domain_init: bool,

    /// C xenstored's `--event PORT`: the local domain's event channel
    /// port, used instead of the one in --xsd-port's file.
    #[arg(short = 'e', long = "event", value_name = "PORT")]
    pub event: Option<u32>,

    /// C xenstored's `-R` / `--no-recovery` (4.17, debug only): accepted
    /// and ignored.
    #[arg(short = 'R', long = "no-recovery", hide = true)]
    pub no_recovery: bool,

    /// C xenstored's `-I` / `--internal-db[=on|off]` (4.17): accepted and
    /// ignored (the store is always in memory).
    #[arg(
        short = 'I',
        long = "internal-db",
        hide = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "on",
        value_name = "on|off"
    )]
    pub internal_db: Option<String>,

    /// On a failed take-over (`-U` with a state file this daemon refuses):
    /// the binary to run instead, with the same arguments and the state
    /// file left in place (e.g. C xenstored). Default: the first of
    /// /usr/lib/xen-*/bin/xenstored and /usr/sbin/xenstored that is not
    /// this executable.
    #[arg(long = "fallback-xenstored", value_name = "FILE")]
    pub fallback_xenstored: Option<PathBuf>,

    /// Live update: take over the state and connections a previous
    /// xenstored left (its `live-update` command runs the new binary so).
    #[arg(short = 'U', long = "live-update")]
    pub live_update: bool,

    /// Settings file (TOML; keys are these long option names). Default:
    /// /etc/xen/rxenstored.toml when it exists. The command line wins.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// oxenstored's configuration file, e.g. /etc/xen/oxenstored.conf: its
    /// quota, pid-file, ring and log keys are honoured (under the TOML file
    /// and the command line; docs/compat.md lists the mapping).
    #[arg(long = "oxenstored-conf", value_name = "FILE")]
    pub oxenstored_conf: Option<PathBuf>,

    /// Verbose logging.
    #[arg(short = 'V', long = "verbose")]
    pub verbose: bool,

    /// Print the version, the Xen interfaces this host offers and the
    /// domain-state backend the daemon would use.
    #[arg(long = "version")]
    pub version: bool,

    /// Print help.
    #[arg(short = 'H', long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,

    /// Internal: this process is the forked daemon; report readiness on
    /// standard output.
    #[arg(long = "internal-daemon-child", hide = true)]
    pub daemon_child: bool,
}

/// `--domain-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DomainStateArg {
    /// The best this host offers.
    Auto,
    /// xenmanage_poll_changed_domain (Xen 4.21+).
    Poll,
    /// XEN_SYSCTL_getdomaininfolist through libxencall (Xen 4.17-4.22).
    Getdomaininfolist,
    /// No domain state.
    None,
    /// One query per known domain (simulator only).
    Legacy,
    /// One call returning a 4 KiB shutdown|dying bitmap (simulator only).
    Bitmap,
    /// The bitmap as a page mapped from the hypervisor: no call
    /// (simulator only).
    Mapped,
    /// A death event channel per domain (simulator only).
    Channel,
}

/// A command-line value that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `WHAT=NB` malformed or naming an unknown quota.
    #[error("bad quota setting {0:?}: expected WHAT=NUMBER with WHAT one of {1}")]
    Quota(String, String),
    /// `-w` malformed.
    #[error("bad timeout {0:?}: expected watch-event=SECONDS")]
    Timeout(String),
}

/// `MAJOR.MINOR`.
fn parse_xen_version(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once('.')
        .ok_or_else(|| format!("{s:?}: expected MAJOR.MINOR, e.g. 4.17"))?;
    let num = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("{s:?}: expected MAJOR.MINOR, e.g. 4.17"))
    };
    Ok((num(a)?, num(b)?))
}

fn quota_names() -> String {
    Quota::ALL.map(|q| q.name()).join(", ")
}

fn split_setting(s: &str) -> Option<(&str, u64)> {
    let (k, v) = s.split_once('=')?;
    Some((k, v.trim().parse().ok()?))
}

impl Options {
    /// C xenstored's options this daemon accepts but does not act on,
    /// each with why (logged as warnings at start-up).
    pub fn ignored_c_options(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.no_domain_init {
            v.push("-D/--no-domain-init ignored: guests are served as usual".to_string());
        }
        if self.no_recovery {
            v.push("-R/--no-recovery ignored: the store is never recovered from disk".into());
        }
        if let Some(x) = &self.internal_db {
            v.push(format!(
                "-I/--internal-db={x} ignored: the store is always in memory"
            ));
        }
        v
    }

    /// The command line C xenstored (4.17 to 4.21) gets when this daemon
    /// hands the host back to it by live update, without the program name
    /// and ending with `-U`: only options both 4.17 and 4.20 know (C stops
    /// at a long option it does not know followed by a value), the
    /// rxenstored-only ones dropped (the socket and the state file are
    /// found by `XENSTORED_RUNDIR` / `XENSTORED_PATH`, which C reads too).
    /// Quotas C names differently are given in its option forms.
    pub fn c_argv(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = Vec::new();
        let mut opt = |name: &str, value: String| {
            v.push(format!("--{name}={value}").into());
        };
        if let Some(p) = &self.pid_file {
            opt("pid-file", p.display().to_string());
        }
        if let Some(p) = &self.trace_file {
            opt("trace-file", p.display().to_string());
        }
        let mut set: Vec<(Quota, u64)> = Vec::new();
        for (val, q) in [
            (self.entry_nb, Quota::Nodes),
            (self.entry_size, Quota::NodeSize),
            (self.watch_nb, Quota::Watches),
            (self.transaction, Quota::Transactions),
            (self.perm_nb, Quota::NodePermissions),
            (self.path_max, Quota::PathMax),
        ] {
            if let Some(val) = val {
                set.push((q, val));
            }
        }
        for s in &self.quota {
            if let Some((k, val)) = split_setting(s) {
                if let Some(q) = Quota::from_name(k.as_bytes()) {
                    set.retain(|(x, _)| *x != q);
                    set.push((q, val));
                }
            }
        }
        for (q, val) in set {
            match q {
                Quota::Nodes => opt("entry-nb", val.to_string()),
                Quota::NodeSize => opt("entry-size", val.to_string()),
                Quota::Watches => opt("watch-nb", val.to_string()),
                Quota::Transactions => opt("transaction", val.to_string()),
                Quota::NodePermissions => opt("perm-nb", val.to_string()),
                Quota::PathMax => opt("path-max", val.to_string()),
                Quota::Outstanding | Quota::Memory | Quota::TransactionNodes => {
                    opt("quota", format!("{}={val}", q.name()))
                }
            }
        }
        for s in &self.quota_soft {
            opt("quota-soft", s.clone());
        }
        for s in &self.timeout {
            opt("timeout", s.clone());
        }
        if let Some(d) = self.priv_domid {
            opt("priv-domid", d.to_string());
        }
        if let Some(d) = self.master_domid {
            opt("master-domid", d.to_string());
        }
        if let Some(e) = self.event {
            opt("event", e.to_string());
        }
        if self.keep_orphans {
            v.push("--keep-orphans".into());
        }
        // Forked (C's default) unless the first daemon ran in the
        // foreground.
        if self.no_fork && !self.daemon_child {
            v.push("--no-fork".into());
        }
        v.push("-U".into());
        v
    }

    /// The socket path, by the rules C xenstored and libxenstore share.
    pub fn socket_path(&self) -> PathBuf {
        if let Some(p) = &self.socket {
            return p.clone();
        }
        if let Some(p) = std::env::var_os("XENSTORED_PATH") {
            return PathBuf::from(p);
        }
        let rundir = std::env::var_os("XENSTORED_RUNDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/xenstored"));
        rundir.join("socket")
    }

    /// The quota values the options give.
    pub fn quotas(&self) -> Result<QuotaSet, CliError> {
        let mut q = QuotaSet::default();
        let shortcuts = [
            (self.entry_nb, Quota::Nodes),
            (self.entry_size, Quota::NodeSize),
            (self.watch_nb, Quota::Watches),
            (self.transaction, Quota::Transactions),
            (self.perm_nb, Quota::NodePermissions),
            (self.path_max, Quota::PathMax),
        ];
        for (v, quota) in shortcuts {
            if let Some(v) = v {
                q.set(quota, v);
            }
        }
        for s in &self.quota {
            let (k, v) =
                split_setting(s).ok_or_else(|| CliError::Quota(s.clone(), quota_names()))?;
            let quota = Quota::from_name(k.as_bytes())
                .ok_or_else(|| CliError::Quota(s.clone(), quota_names()))?;
            q.set(quota, v);
        }
        for s in &self.quota_soft {
            match split_setting(s) {
                Some(("memory", v)) => q.soft_memory = v,
                _ => return Err(CliError::Quota(s.clone(), "memory".into())),
            }
        }
        Ok(q)
    }

    /// The watch-event timeout in seconds (0 disables; default 20).
    pub fn watch_event_timeout(&self) -> Result<u64, CliError> {
        let mut t = 20;
        for s in &self.timeout {
            match split_setting(s) {
                Some(("watch-event", v)) => t = v,
                _ => return Err(CliError::Timeout(s.clone())),
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("rxenstored").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn c_style_options() {
        let o = parse(&[
            "-N",
            "-F",
            "/tmp/p",
            "-E",
            "50",
            "-Q",
            "memory=100",
            "-q",
            "memory=90",
            "-M",
            "4000",
        ]);
        assert!(o.no_fork);
        let q = o.quotas().unwrap();
        assert_eq!(q.get(Quota::Nodes), 50);
        assert_eq!(q.get(Quota::Memory), 100);
        assert_eq!(q.soft_memory, 90);
        assert_eq!(q.get(Quota::PathMax), 2048);
    }

    #[test]
    fn bad_quota_names() {
        assert!(parse(&["-Q", "bogus=1"]).quotas().is_err());
        assert!(parse(&["-Q", "nodes"]).quotas().is_err());
        assert!(parse(&["-q", "nodes=3"]).quotas().is_err());
        assert!(parse(&["-w", "other=3"]).watch_event_timeout().is_err());
        assert_eq!(
            parse(&["-w", "watch-event=0"])
                .watch_event_timeout()
                .unwrap(),
            0
        );
    }

    #[test]
    fn every_c_option_is_accepted() {
        // C 4.17's option table (xenstored_core.c: options[] and the
        // getopt string), then 4.20's additions (core.c), as C passes its
        // argv on live update: its own argv plus -U.
        let o = parse(&[
            "--pid-file=/run/xenstore.pid",
            "-D",
            "-E",
            "1000",
            "--event=7",
            "--master-domid=0",
            "-N",
            "--priv-domid=0",
            "-P",
            "-S",
            "2048",
            "-T",
            "/var/log/t",
            "-t",
            "10",
            "-A",
            "5",
            "-M",
            "1024",
            "-Q",
            "outstanding=20",
            "-Q",
            "transaction-nodes=100",
            "-Q",
            "memory=200000",
            "-q",
            "memory=100000",
            "-w",
            "watch-event=20",
            "-R",
            "-I",
            "--internal-db=off",
            "-K",
            "-V",
            "-W",
            "128",
            "--trace-control=+io",
            "-U",
        ]);
        assert!(o.live_update && o.no_domain_init && o.no_recovery && o.keep_orphans);
        assert_eq!(o.event, Some(7));
        assert_eq!(o.internal_db.as_deref(), Some("off"));
        assert_eq!(o.ignored_c_options().len(), 3);
        let q = o.quotas().unwrap();
        assert_eq!(q.get(Quota::Outstanding), 20);
        assert_eq!(q.get(Quota::Nodes), 1000);
        let o = parse(&["-I", "--live-update"]);
        assert_eq!(o.internal_db.as_deref(), Some("on"));
    }

    #[test]
    fn the_c_command_line_has_only_options_c_knows() {
        let o = parse(&[
            "--pid-file",
            "/run/xenstore.pid",
            "-T",
            "/t",
            "--log-file",
            "/l",
            "--socket",
            "/s",
            "-Q",
            "nodes=9",
            "-Q",
            "outstanding=3",
            "-E",
            "5",
            "-K",
            "--internal-daemon-child",
            "-V",
            "--domain-state",
            "poll",
        ]);
        let a: Vec<String> = o
            .c_argv()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a,
            [
                "--pid-file=/run/xenstore.pid",
                "--trace-file=/t",
                "--entry-nb=9",
                "--quota=outstanding=3",
                "--keep-orphans",
                "-U"
            ]
        );
        assert!(parse(&["-N"]).c_argv().contains(&"--no-fork".into()));
    }

    #[test]
    fn explicit_socket_wins() {
        assert_eq!(
            parse(&["--socket", "/x/s"]).socket_path(),
            PathBuf::from("/x/s")
        );
    }
}
