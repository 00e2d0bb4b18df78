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
        Options::try_parse_from(std::iter::once("rxenstored").chain(args.iter().copied())).unwrap()
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
    fn explicit_socket_wins() {
        assert_eq!(
            parse(&["--socket", "/x/s"]).socket_path(),
            PathBuf::from("/x/s")
        );
    }
}
