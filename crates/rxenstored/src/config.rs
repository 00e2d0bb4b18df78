//! Settings from files, under the command line.
//!
//! Every command-line setting can also come from a TOML file
//! (`--config FILE`; by default `/etc/xen/rxenstored.toml` when it exists)
//! whose keys are the long option names (`entry-nb = 2000`,
//! `quota = ["memory=4194304"]`, `no-fork = true`). oxenstored's
//! `key = value` file can be named too (`--oxenstored-conf FILE`, or
//! `oxenstored-conf` in the TOML file): the keys that have a meaning here
//! become the matching options, and each one that has none is reported.
//!
//! Files are turned into command-line arguments placed before the real
//! ones, so one parser checks everything and the command line wins:
//! oxenstored's file first, then the TOML file, then the command line. A
//! single-valued option given twice takes the last value; repeatable ones
//! (`-Q`, `-q`, `-w`, `--trace-control`) add up, the later setting of the
//! same quota winning.

use crate::cli::Options;
use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use xenstore_store::quota::Quota;

/// The TOML file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/xen/rxenstored.toml";

/// What went wrong reading the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named could not be read.
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The TOML file is not TOML.
    #[error("{0}: {1}")]
    Toml(PathBuf, String),
    /// A key that is no option, or a value of the wrong kind.
    #[error("{0}: {1}")]
    Setting(PathBuf, String),
    /// oxenstored's file has a line that is not `key = value`.
    #[error("{0}:{1}: expected `key = value`")]
    Line(PathBuf, usize),
    /// The options, from whatever source, do not parse.
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

/// The options and the notes on files read, to be logged once logging
/// runs.
pub struct Loaded {
    /// The options, command line over files.
    pub options: Options,
    /// What was read and what was ignored, one line each.
    pub notes: Vec<String>,
}

/// Keys that are options but make no sense in a file.
const NOT_IN_FILES: [&str; 4] = ["help", "version", "config", "internal-daemon-child"];

/// The value of `--NAME` among `args` (last one wins), in either the
/// `--NAME VALUE` or the `--NAME=VALUE` form.
fn find_arg(args: &[OsString], name: &str) -> Option<OsString> {
    let long = format!("--{name}");
    let eq = format!("--{name}=");
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == long {
            found = it.next().cloned();
        } else if let Some(v) = s.strip_prefix(&eq) {
            found = Some(v.into());
        }
    }
    found
}

/// The long names of the options that may appear in a file, and whether
/// each takes a value.
fn file_keys() -> Vec<(String, bool)> {
    Options::command()
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            (!NOT_IN_FILES.contains(&long))
                .then(|| (long.to_string(), a.get_action().takes_values()))
        })
        .collect()
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// The arguments a TOML file stands for.
pub fn toml_args(path: &Path, text: &str) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml(path.to_path_buf(), e.to_string()))?;
    let keys = file_keys();
    let bad = |m: String| ConfigError::Setting(path.to_path_buf(), m);
    let mut args = Vec::new();
    for (key, value) in &table {
        let Some((_, takes_value)) = keys.iter().find(|(k, _)| k == key) else {
            let mut names: Vec<_> = keys.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            return Err(bad(format!(
                "unknown setting `{key}` (settings are the long options: {})",
                names.join(", ")
            )));
        };
        let flag = format!("--{key}");
        match (takes_value, value) {
            (false, toml::Value::Boolean(true)) => args.push(flag.into()),
            (false, toml::Value::Boolean(false)) => {}
            (false, _) => return Err(bad(format!("`{key}` is true or false"))),
            (true, toml::Value::Array(items)) => {
                for item in items {
                    let v = scalar(item)
                        .ok_or_else(|| bad(format!("`{key}`: a string or a number per item")))?;
                    args.push(flag.clone().into());
                    args.push(v.into());
                }
            }
            (true, v) => {
                let v = scalar(v).ok_or_else(|| bad(format!("`{key}`: a string or a number")))?;
                args.push(flag.into());
                args.push(v.into());
            }
        }
    }
    Ok(args)
}

/// The arguments oxenstored's configuration file stands for, and a note
/// per key that has no meaning here.
pub fn oxenstored_args(
    path: &Path,
    text: &str,
) -> Result<(Vec<OsString>, Vec<String>), ConfigError> {
    let mut args: Vec<OsString> = Vec::new();
    let mut notes = Vec::new();
    let quota = |q: Quota, v: &str, args: &mut Vec<OsString>| {
        // oxenstored takes a negative number as "no limit".
        let n = match v.parse::<i64>() {
            Ok(n) if n < 0 => u64::MAX,
            Ok(n) => n.unsigned_abs(),
            Err(_) => return false,
        };
        args.push("--quota".into());
        args.push(format!("{}={n}", q.name()).into());
        true
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| ConfigError::Line(path.to_path_buf(), i + 1))?;
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        let bad_value = || {
            ConfigError::Setting(
                path.to_path_buf(),
                format!("line {}: `{key}`: bad value {value:?}", i + 1),
            )
        };
        let as_quota = match key {
            "quota-maxentity" => Some(Quota::Nodes),
            "quota-maxsize" => Some(Quota::NodeSize),
            "quota-maxwatch" => Some(Quota::Watches),
            "quota-transaction" => Some(Quota::Transactions),
            "quota-maxrequests" => Some(Quota::TransactionNodes),
            "quota-maxoutstanding" => Some(Quota::Outstanding),
            "quota-path-max" => Some(Quota::PathMax),
            _ => None,
        };
        if let Some(q) = as_quota {
            if !quota(q, value, &mut args) {
                return Err(bad_value());
            }
            continue;
        }
        let option = match key {
            "pid-file" => Some("--pid-file"),
            "xenstored-kva" => Some("--xsd-kva"),
            "xenstored-port" => Some("--xsd-port"),
            "xenstored-log-file" | "access-log-file" if value.starts_with("syslog:") => {
                notes.push(format!(
                    "{}: `{key} = {value}`: ignored (rxenstored logs to syslog when it forks \
                     without --log-file; it has no syslog access log)",
                    path.display()
                ));
                continue;
            }
            "xenstored-log-file" => Some("--log-file"),
            "access-log-file" => Some("--trace-file"),
            _ => None,
        };
        if let Some(option) = option {
            args.push(option.into());
            args.push(value.into());
            continue;
        }
        match (key, value) {
            ("quota-activate", "false") => {
                for q in Quota::ALL {
                    args.push("--quota".into());
                    args.push(format!("{}={}", q.name(), u64::MAX).into());
                }
                notes.push(format!(
                    "{}: `quota-activate = false`: every quota set to its largest value",
                    path.display()
                ));
            }
            ("quota-activate", "true") => {}
            ("quota-activate", _) => return Err(bad_value()),
            ("perms-activate" | "perms-watch-activate", "false") => notes.push(format!(
                "{}: `{key} = false`: ignored, rxenstored always checks permissions",
                path.display()
            )),
            _ => notes.push(format!(
                "{}: `{key}`: no meaning in rxenstored, ignored (docs/compat.md)",
                path.display()
            )),
        }
    }
    Ok((args, notes))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))
}

/// Parses `argv` (the program name first) over the files it names or
/// implies.
pub fn load(argv: Vec<OsString>) -> Result<Loaded, ConfigError> {
    load_with_default(argv, Path::new(DEFAULT_CONFIG))
}

/// [`load`], with the default TOML file at `default`.
pub fn load_with_default(argv: Vec<OsString>, default: &Path) -> Result<Loaded, ConfigError> {
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_else(|| "rxenstored".into());
    let cli: Vec<OsString> = argv.collect();
    let mut notes = Vec::new();
    let mut file_args = Vec::new();
    let toml_path = match find_arg(&cli, "config") {
        Some(p) => Some(PathBuf::from(p)),
        None => default.exists().then(|| default.to_path_buf()),
    };
    if let Some(p) = &toml_path {
        file_args = toml_args(p, &read(p)?)?;
        notes.push(format!("settings read from {}", p.display()));
    }
    let ox = find_arg(&cli, "oxenstored-conf").or_else(|| find_arg(&file_args, "oxenstored-conf"));
    let mut ox_args = Vec::new();
    if let Some(p) = ox.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let (a, n) = oxenstored_args(&p, &read(&p)?)?;
        ox_args = a;
        notes.push(format!("oxenstored settings read from {}", p.display()));
        notes.extend(n);
    }
    let all: Vec<OsString> = std::iter::once(program)
        .chain(ox_args)
        .chain(file_args)
        .chain(cli)
        .collect();
    let matches = Options::command()
        .args_override_self(true)
        .try_get_matches_from(all)?;
    let mut options = Options::from_arg_matches(&matches)?;
    order_quotas(&matches, &mut options);
    Ok(Loaded { options, notes })
}

/// Puts every quota setting, the short forms (`-E`, `-S`, `-W`, `-t`,
/// `-A`, `-M`) and `-Q`, into `-Q` form in the order given, so that the
/// last setting of a quota wins whichever form it took, as in C
/// xenstored, and the command line wins over the files before it.
fn order_quotas(matches: &clap::ArgMatches, options: &mut Options) {
    let mut all: Vec<(usize, String)> = Vec::new();
    let short = [
        ("entry_nb", Quota::Nodes),
        ("entry_size", Quota::NodeSize),
        ("watch_nb", Quota::Watches),
        ("transaction", Quota::Transactions),
        ("perm_nb", Quota::NodePermissions),
        ("path_max", Quota::PathMax),
    ];
    for (id, q) in short {
        if let (Some(idx), Some(vals)) = (matches.indices_of(id), matches.get_many::<u64>(id)) {
            all.extend(idx.zip(vals).map(|(i, v)| (i, format!("{}={v}", q.name()))));
        }
    }
    if let (Some(idx), Some(vals)) = (
        matches.indices_of("quota"),
        matches.get_many::<String>("quota"),
    ) {
        all.extend(idx.zip(vals.cloned()));
    }
    all.sort_by_key(|(i, _)| *i);
    options.quota = all.into_iter().map(|(_, s)| s).collect();
    options.entry_nb = None;
    options.entry_size = None;
    options.watch_nb = None;
    options.transaction = None;
    options.perm_nb = None;
    options.path_max = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenstore_store::quota::QuotaSet;

    fn args(v: &[&str]) -> Vec<OsString> {
        std::iter::once("rxenstored")
            .chain(v.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rxs-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_quotas_add_up() {
        let d = dir("wins");
        let f = d.join("c.toml");
        std::fs::write(
            &f,
            "entry-nb = 10\nno-fork = true\npid-file = \"/a\"\nquota = [\"memory=100\", \"watches=7\"]\n",
        )
        .unwrap();
        let l = load_with_default(
            args(&[
                "--config",
                f.to_str().unwrap(),
                "-F",
                "/b",
                "-Q",
                "memory=5",
            ]),
            Path::new("/nonexistent"),
        )
        .unwrap();
        let o = l.options;
        assert!(o.no_fork);
        // The last setting of a quota wins, whichever form it took.
        let later = load_with_default(
            args(&["-Q", "nodes=4", "-E", "6", "-W", "3", "-Q", "watches=9"]),
            Path::new("/nonexistent"),
        )
        .unwrap()
        .options
        .quotas()
        .unwrap();
        assert_eq!(later.get(Quota::Nodes), 6);
        assert_eq!(later.get(Quota::Watches), 9);
        assert_eq!(o.pid_file.as_deref(), Some(Path::new("/b")));
        let q = o.quotas().unwrap();
        assert_eq!(q.get(Quota::Nodes), 10);
        assert_eq!(q.get(Quota::Memory), 5);
        assert_eq!(q.get(Quota::Watches), 7);
    }

    #[test]
    fn the_default_file_is_read_only_when_it_exists() {
        let d = dir("default");
        let f = d.join("rxenstored.toml");
        let none = load_with_default(args(&[]), &f).unwrap();
        let default_nodes = QuotaSet::default().get(Quota::Nodes);
        assert_eq!(
            none.options.quotas().unwrap().get(Quota::Nodes),
            default_nodes
        );
        std::fs::write(&f, "entry-nb = 3\n").unwrap();
        let some = load_with_default(args(&[]), &f).unwrap();
        assert_eq!(some.options.quotas().unwrap().get(Quota::Nodes), 3);
        assert!(some.notes[0].contains("rxenstored.toml"));
    }

    #[test]
    fn unknown_keys_and_wrong_kinds_are_errors() {
        let p = Path::new("x.toml");
        let e = toml_args(p, "entry-nbb = 3").unwrap_err().to_string();
        assert!(e.contains("unknown setting `entry-nbb`"), "{e}");
        assert!(e.contains("entry-nb"), "{e}");
        assert!(toml_args(p, "no-fork = 3").is_err());
        assert!(toml_args(p, "entry-nb = { a = 1 }").is_err());
        assert!(toml_args(p, "help = true").is_err());
        assert!(toml_args(p, "entry-nb = ").is_err());
        // A value clap rejects is an error too.
        let d = dir("kinds");
        let f = d.join("c.toml");
        std::fs::write(&f, "entry-nb = \"many\"\n").unwrap();
        assert!(load_with_default(
            args(&["--config", f.to_str().unwrap()]),
            Path::new("/nonexistent")
        )
        .is_err());
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let e = load_with_default(
            args(&["--config", "/nonexistent/x.toml"]),
            Path::new("/nonexistent"),
        );
        assert!(matches!(e, Err(ConfigError::Read(..))));
    }

    #[test]
    fn oxenstored_keys_map_to_quotas_and_paths() {
        let text = "# comment\n\
            quota-maxentity = 1000\n\
            quota-maxsize = 2048\n\
            quota-maxwatch = 100\n\
            quota-transaction = 10\n\
            quota-maxrequests = 1024\n\
            quota-maxoutstanding = -1\n\
            quota-path-max = 1024\n\
            quota-maxwatchevents = 1024\n\
            merge-activate = true\n\
            perms-activate = false\n\
            pid-file = /run/xenstored.pid\n\
            xenstored-kva = /proc/xen/xsd_kva\n\
            xenstored-log-file = syslog:daemon\n\
            access-log-file = /var/log/xen/xenstored-access.log\n";
        let d = dir("ox");
        let f = d.join("oxenstored.conf");
        std::fs::write(&f, text).unwrap();
        let l = load_with_default(
            args(&["--oxenstored-conf", f.to_str().unwrap(), "-W", "50"]),
            Path::new("/nonexistent"),
        )
        .unwrap();
        let q = l.options.quotas().unwrap();
        assert_eq!(q.get(Quota::Nodes), 1000);
        assert_eq!(q.get(Quota::NodeSize), 2048);
        assert_eq!(q.get(Quota::Watches), 50, "the command line wins");
        assert_eq!(q.get(Quota::Transactions), 10);
        assert_eq!(q.get(Quota::TransactionNodes), 1024);
        assert_eq!(q.get(Quota::Outstanding), u64::MAX);
        assert_eq!(q.get(Quota::PathMax), 1024);
        assert_eq!(
            l.options.pid_file.as_deref(),
            Some(Path::new("/run/xenstored.pid"))
        );
        assert_eq!(
            l.options.trace_file.as_deref(),
            Some(Path::new("/var/log/xen/xenstored-access.log"))
        );
        assert_eq!(l.options.log_file, None);
        let notes = l.notes.join("\n");
        for ignored in [
            "quota-maxwatchevents",
            "merge-activate",
            "perms-activate",
            "syslog:daemon",
        ] {
            assert!(notes.contains(ignored), "{ignored} not reported: {notes}");
        }
        assert!(oxenstored_args(Path::new("o"), "quota-maxentity = lots").is_err());
        assert!(oxenstored_args(Path::new("o"), "just words").is_err());
    }

    #[test]
    fn quota_activate_false_lifts_every_quota() {
        let (a, notes) = oxenstored_args(Path::new("o"), "quota-activate = false").unwrap();
        let mut all = vec![OsString::from("rxenstored")];
        all.extend(a);
        let o = <Options as clap::Parser>::try_parse_from(all).unwrap();
        let q = o.quotas().unwrap();
        assert_eq!(q.get(Quota::Nodes), u64::MAX);
        assert_eq!(notes.len(), 1);
    }
}
