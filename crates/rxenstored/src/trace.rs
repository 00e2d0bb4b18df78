//! The access log (`-T FILE`): one line per request and reply, plus
//! connection and transaction life cycle, switchable at run time with
//! `CONTROL log`. Reopened on SIGHUP (for log rotation).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use xenstore_proto::{args, Message};

/// A trace switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Requests and replies.
    Io,
    /// Connections created and destroyed.
    Obj,
}

impl Switch {
    /// All switches, in `CONTROL log` order.
    pub const ALL: [Switch; 2] = [Switch::Obj, Switch::Io];

    /// The switch's name.
    pub fn name(self) -> &'static str {
        match self {
            Switch::Io => "io",
            Switch::Obj => "obj",
        }
    }

    /// Looks a switch up by name.
    pub fn from_name(s: &str) -> Option<Switch> {
        Switch::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// The trace file and its switches.
#[derive(Debug)]
pub struct Trace {
    path: Option<PathBuf>,
    file: Option<File>,
    io: bool,
    obj: bool,
}

/// UTC wall-clock time as `YYYYMMDD HH:MM:SS.mmm`.
pub fn timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Trace {
    /// A trace writing to `path` (if any), with io and obj on.
    pub fn open(path: Option<&Path>) -> io::Result<Trace> {
        let mut t = Trace {
            path: path.map(Path::to_path_buf),
            file: None,
            io: true,
            obj: true,
        };
        t.reopen()?;
        Ok(t)
    }

    /// Reopens the file (SIGHUP, `CONTROL log on`).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = match &self.path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(())
    }

    /// Switches to another file (`CONTROL logfile`).
    pub fn set_path(&mut self, path: PathBuf) -> io::Result<()> {
        self.path = Some(path);
        self.reopen()
    }

    /// Closes the file (`CONTROL log off`).
    pub fn close(&mut self) {
        self.file = None;
    }

    /// True if a file is open.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// A switch's state.
    pub fn get(&self, s: Switch) -> bool {
        match s {
            Switch::Io => self.io,
            Switch::Obj => self.obj,
        }
    }

    /// Sets a switch.
    pub fn set(&mut self, s: Switch, on: bool) {
        match s {
            Switch::Io => self.io = on,
            Switch::Obj => self.obj = on,
        }
    }

    fn line(&mut self, text: std::fmt::Arguments) {
        if let Some(f) = &mut self.file {
            // A failing trace write must not take the daemon down.
            let _ = writeln!(f, "{text}");
        }
    }

    /// Logs a message going in (`IN`) or out (`OUT`) of connection `conn`.
    pub fn io(&mut self, dir: &str, conn: u64, m: &Message) {
        if !self.io || self.file.is_none() {
            return;
        }
        let kind = m.kind().map_or_else(
            || format!("UNKNOWN({})", m.header.msg_type),
            |k| k.name().to_owned(),
        );
        let payload = args::printable(&m.payload[..m.payload.len().min(4096)]);
        let ts = timestamp();
        let (req, tx) = (m.header.req_id, m.header.tx_id);
        self.line(format_args!(
            "{dir:<3} conn{conn} {ts} {kind} req {req} tx {tx} ({payload})"
        ));
    }

    /// Logs a connection or transaction life-cycle event.
    pub fn obj(&mut self, what: &str, conn: u64) {
        if self.obj && self.file.is_some() {
            let ts = timestamp();
            self.line(format_args!("OBJ conn{conn} {ts} {what}"));
        }
    }

    /// Writes free text (`CONTROL memreport`).
    pub fn text(&mut self, text: &str) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(text.as_bytes()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no trace file")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), "20261124 19:40:01.123".len());
        assert!(t.starts_with("20"));
    }

    #[test]
    fn writes_lines_and_switches() {
        let dir = std::env::temp_dir().join(format!("rxs-trace-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("t.log");
        let mut t = Trace::open(Some(&p)).unwrap();
        let m = Message::new(2, 7, 0, b"/a\0".to_vec());
        t.io("IN", 1, &m);
        t.set(Switch::Io, false);
        t.io("OUT", 1, &m);
        t.obj("created", 1);
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("IN  conn1"), "{s}");
        assert!(s.contains("READ req 7 tx 0 (/a )"), "{s}");
        assert!(!s.contains("OUT"), "{s}");
        assert!(s.contains("OBJ conn1"), "{s}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
