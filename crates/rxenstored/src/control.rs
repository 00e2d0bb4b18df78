//! XS_CONTROL: the daemon's administrative commands, with C xenstored's
//! names, arguments and reply texts (`xenstore-control` speaks them).
//!
//! | command | arguments | reply |
//! |---|---|---|
//! | `check` | none | repairs the tree and the accounting; `OK` |
//! | `log` | none, or `on`, `off`, `+<switch>`, `-<switch>` | switch table, or `OK` |
//! | `logfile` | `<file>` | trace to another file; `OK` |
//! | `memreport` | `[<file>]` | accounting report into the file or trace file; without either, the report itself |
//! | `print` | `<string>` | writes `control: <string>` to the daemon log; `OK` |
//! | `quota` | none, `set <name> <val>`, `<domid>`, `max [-r]` | tables as C prints them |
//! | `quota-soft` | none, `set <name> <val>` | likewise for soft quotas |
//! | `help` | none | the command list |
//!
//! `live-update` (`-f <file>`, `-c <cmdline>`, `-s [-t <secs>] [-F] [-v
//! <version>]`, `-a`) is the daemon's, not the store's: the session, the
//! wait for transactions and the switch are in `state.rs` and
//! `live_update.rs`. Unknown commands give `EINVAL`, as in C.

use crate::trace::{Switch, Trace};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use xenstore_proto::{args, number, XsError};
use xenstore_store::quota::Quota;
use xenstore_store::Store;

const COMMANDS: &[(&str, &str)] = &[
    ("check", ""),
    ("log", "[on|off|+<switch>|-<switch>]"),
    ("logfile", "<file>"),
    ("memreport", "[<file>]"),
    ("print", "<string>"),
    ("quota", "[set <name> <val>|<domid>|max [-r]]"),
    ("quota-soft", "[set <name> <val>]"),
    (
        "live-update",
        "-f <file> | -c <cmdline> | -s [-t <secs>] [-F] [-v <version>] | -a",
    ),
    ("help", ""),
];

/// What a CONTROL command answered.
pub enum Reply {
    /// `OK` acknowledgement.
    Ok,
    /// A text reply (sent NUL-terminated).
    Text(String),
}

/// Where relative file names given to `logfile` and `memreport` go.
pub fn absolute(name: &str, base: &std::path::Path) -> PathBuf {
    let p = PathBuf::from(name);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Runs a CONTROL request. The caller has already checked privilege.
pub fn run(
    store: &mut Store,
    trace: &mut Trace,
    file_base: &std::path::Path,
    payload: &[u8],
) -> Result<Reply, XsError> {
    let strings = args::strings(payload);
    let Some((cmd, rest)) = strings.split_first() else {
        return Err(XsError::Einval);
    };
    let rest: Vec<String> = rest
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match *cmd {
        b"check" => {
            if !rest.is_empty() {
                return Err(XsError::Einval);
            }
            for problem in store.check() {
                tracing::warn!("check: {problem}");
            }
            Ok(Reply::Ok)
        }
        b"log" => log(trace, &rest),
        b"logfile" => {
            let [file] = rest.as_slice() else {
                return Err(XsError::Einval);
            };
            trace
                .set_path(absolute(file, file_base))
                .map_err(|_| XsError::Einval)?;
            Ok(Reply::Ok)
        }
        b"memreport" => memreport(store, trace, file_base, &rest),
        b"print" => {
            let [text] = rest.as_slice() else {
                return Err(XsError::Einval);
            };
            tracing::info!("control: {text}");
            Ok(Reply::Ok)
        }
        b"quota" => quota(store, &rest, false),
        b"quota-soft" => quota(store, &rest, true),
        b"help" => {
            if !rest.is_empty() {
                return Err(XsError::Einval);
            }
            let mut s = String::new();
            for (name, pars) in COMMANDS {
                let _ = writeln!(s, "{name:<15} {pars}");
            }
            Ok(Reply::Text(s))
        }
        // Handled by the daemon's state before the store sees it.
        b"live-update" => Err(XsError::Einval),
        _ => Err(XsError::Einval),
    }
}

fn log(trace: &mut Trace, rest: &[&str]) -> Result<Reply, XsError> {
    match rest {
        [] => {
            let mut s = String::from("Log switch settings:\n");
            for sw in Switch::ALL {
                let _ = writeln!(
                    s,
                    "{:<8}: {}",
                    sw.name(),
                    if trace.get(sw) { "on" } else { "off" }
                );
            }
            Ok(Reply::Text(s))
        }
        ["on"] => {
            trace.reopen().map_err(|_| XsError::Einval)?;
            Ok(Reply::Ok)
        }
        ["off"] => {
            trace.close();
            Ok(Reply::Ok)
        }
        [arg] => {
            let (on, name) = match arg.split_at_checked(1) {
                Some(("+", n)) => (true, n),
                Some(("-", n)) => (false, n),
                _ => return Err(XsError::Einval),
            };
            let sw = Switch::from_name(name).ok_or(XsError::Einval)?;
            trace.set(sw, on);
            Ok(Reply::Ok)
        }
        _ => Err(XsError::Einval),
    }
}

fn quota(store: &mut Store, rest: &[&str], soft: bool) -> Result<Reply, XsError> {
    let global = store.config().quota;
    match rest {
        [] => {
            let mut s = String::from("Quota settings:\n");
            for q in Quota::ALL {
                let v = if soft {
                    if !q.has_soft() {
                        continue;
                    }
                    global.soft_memory
                } else {
                    global.get(q)
                };
                if v != 0 {
                    let _ = writeln!(s, "{:<17}: {:>8} {}", q.name(), v, q.description());
                }
            }
            Ok(Reply::Text(s))
        }
        ["set", name, val] => {
            // C reads the value with atoi into an int: 1 to INT_MAX.
            let v = number::atoi(val.as_bytes());
            if v < 1 || v > i64::from(i32::MAX) {
                return Err(XsError::Einval);
            }
            let q = Quota::from_name(name.as_bytes()).ok_or(XsError::Einval)?;
            let current = if soft {
                if !q.has_soft() {
                    return Err(XsError::Einval);
                }
                global.soft_memory
            } else {
                global.get(q)
            };
            if current == 0 {
                return Err(XsError::Einval);
            }
            store.set_global_quota(q, soft, v.unsigned_abs());
            Ok(Reply::Ok)
        }
        ["set", ..] => Err(XsError::Einval),
        _ if soft => Err(XsError::Einval),
        ["max", more @ ..] => {
            match more {
                [] => {}
                ["-r"] => store.reset_max_seen(),
                _ => return Err(XsError::Einval),
            }
            let max = store.max_seen();
            let mut s = String::from("Max. seen accounting values:\n");
            for q in Quota::ALL {
                let _ = writeln!(s, "{:<17}: {:>8}", q.name(), max[q.index()]);
            }
            Ok(Reply::Text(s))
        }
        [domid] => {
            let domid =
                u32::try_from(number::atoi(domid.as_bytes())).map_err(|_| XsError::Enoent)?;
            let d = store.domain(domid).ok_or(XsError::Enoent)?;
            let mut s = format!("Domain {domid}:\n");
            for q in Quota::ALL {
                let _ = writeln!(
                    s,
                    "{:<17}: {:>8} (max {:>8})",
                    q.name(),
                    d.usage.get(q),
                    d.usage.max[q.index()]
                );
            }
            Ok(Reply::Text(s))
        }
        _ => Err(XsError::Einval),
    }
}

/// The accounting report `memreport` writes.
pub fn report(store: &Store) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "rxenstored memory report");
    let _ = writeln!(
        s,
        "nodes: {}  watches: {}  connections: {}",
        store.db().len(),
        store.watches().len(),
        store.connection_count()
    );
    let _ = writeln!(
        s,
        "{:>6} {:>10} {:>8} {:>8} {:>10} {:>12} {:>8}",
        "domid", "introduced", "nodes", "watches", "trans", "memory", "shutdown"
    );
    for d in store.domains() {
        let _ = writeln!(
            s,
            "{:>6} {:>10} {:>8} {:>8} {:>10} {:>12} {:>8}",
            d.domid,
            d.introduced,
            d.usage.get(Quota::Nodes),
            d.usage.get(Quota::Watches),
            d.usage.get(Quota::Transactions),
            d.usage.get(Quota::Memory),
            d.shutdown
        );
    }
    s
}

fn memreport(
    store: &Store,
    trace: &mut Trace,
    file_base: &std::path::Path,
    rest: &[&str],
) -> Result<Reply, XsError> {
    let text = report(store);
    match rest {
        [] if trace.is_open() => {
            trace.text(&text).map_err(|_| XsError::Einval)?;
            Ok(Reply::Ok)
        }
        [] => Ok(Reply::Text(text)),
        [file] => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(absolute(file, file_base))
                .map_err(|_| XsError::Einval)?;
            f.write_all(text.as_bytes()).map_err(|_| XsError::Einval)?;
            Ok(Reply::Ok)
        }
        _ => Err(XsError::Einval),
    }
}
