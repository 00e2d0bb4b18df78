//! Daemon logging through `tracing`, to one of three places:
//!
//! * a file (`--log-file`), reopened on SIGHUP for log rotation;
//! * syslog (the `/dev/log` socket, facility daemon, which journald also
//!   serves), when the daemon forked into the background and no file was
//!   named: its standard error is gone then, as C xenstored's is;
//! * standard error otherwise (`-N`; under systemd, the journal).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// syslog's daemon facility (3), shifted as the priority field wants it.
const FACILITY_DAEMON: u8 = 3 << 3;

#[derive(Debug)]
enum Sink {
    /// Standard error.
    Stderr,
    /// A file, reopened by [`LogTarget::reopen`].
    File(PathBuf, Option<File>),
    /// A datagram socket speaking syslog's local protocol.
    Syslog(PathBuf, Option<UnixDatagram>),
}

/// Where log lines go; cheap to clone.
#[derive(Clone, Debug)]
pub struct LogTarget {
    sink: Arc<Mutex<Sink>>,
    ident: String,
}

impl LogTarget {
    /// Logs to `path`, or to standard error.
    pub fn new(path: Option<PathBuf>) -> io::Result<LogTarget> {
        let t = LogTarget::with(match path {
            Some(p) => Sink::File(p, None),
            None => Sink::Stderr,
        });
        t.reopen()?;
        Ok(t)
    }

    /// Logs to the syslog socket at `socket` (normally
    /// [`SYSLOG_SOCKET`]); to standard error while it cannot be reached.
    pub fn syslog(socket: &Path) -> LogTarget {
        let t = LogTarget::with(Sink::Syslog(socket.to_path_buf(), None));
        let _ = t.reopen();
        t
    }

    fn with(sink: Sink) -> LogTarget {
        LogTarget {
            sink: Arc::new(Mutex::new(sink)),
            ident: format!("rxenstored[{}]", std::process::id()),
        }
    }

    /// Reopens the file (after rotation) or reconnects to syslog (after a
    /// restart of the syslog daemon).
    pub fn reopen(&self) -> io::Result<()> {
        let Ok(mut g) = self.sink.lock() else {
            return Ok(());
        };
        match &mut *g {
            Sink::Stderr => Ok(()),
            Sink::File(p, f) => {
                *f = Some(OpenOptions::new().create(true).append(true).open(p)?);
                Ok(())
            }
            Sink::Syslog(p, s) => {
                let sock = UnixDatagram::unbound()?;
                sock.connect(&*p)?;
                *s = Some(sock);
                Ok(())
            }
        }
    }

    /// Installs the global subscriber.
    pub fn install(&self, verbose: bool) {
        let default = if verbose { "debug" } else { "info" };
        let filter = tracing_subscriber::EnvFilter::try_from_env("RXENSTORED_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        let syslog = self
            .sink
            .lock()
            .map(|g| matches!(*g, Sink::Syslog(..)))
            .unwrap_or(false);
        let fmt = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(self.clone())
            .with_ansi(false);
        // syslog stamps the time and the level goes in the priority.
        let _ = if syslog {
            fmt.without_time().with_level(false).try_init()
        } else {
            fmt.try_init()
        };
    }
}

/// syslog's severity for a tracing level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// One log write.
pub struct LogWriter {
    sink: Arc<Mutex<Sink>>,
    priority: u8,
    ident: String,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Ok(mut g) = self.sink.lock() else {
            return io::stderr().write(buf);
        };
        match &mut *g {
            Sink::File(_, Some(f)) => f.write(buf),
            Sink::Syslog(_, Some(s)) => {
                let line = buf.strip_suffix(b"\n").unwrap_or(buf);
                let mut d = format!("<{}>{}: ", self.priority, self.ident).into_bytes();
                d.extend_from_slice(line);
                match s.send(&d) {
                    Ok(_) => Ok(buf.len()),
                    // syslog went away: the line goes to standard error
                    // rather than nowhere.
                    Err(_) => io::stderr().write(buf),
                }
            }
            _ => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogTarget {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter {
            sink: self.sink.clone(),
            priority: FACILITY_DAEMON | 6,
            ident: self.ident.clone(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LogWriter {
        LogWriter {
            sink: self.sink.clone(),
            priority: FACILITY_DAEMON | severity(meta.level()),
            ident: self.ident.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_lines_carry_the_daemon_facility_and_the_level() {
        let dir = std::env::temp_dir().join(format!("rxs-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let t = LogTarget::syslog(&path);
        let meta = tracing::Level::WARN;
        let mut w = t.make_writer();
        w.write_all(b"hello\n").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            got,
            format!("<30>rxenstored[{}]: hello", std::process::id())
        );
        assert_eq!(FACILITY_DAEMON | severity(&meta), 28);
        assert_eq!(FACILITY_DAEMON | severity(&Level::ERROR), 27);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_is_reopened_after_rotation() {
        let dir = std::env::temp_dir().join(format!("rxs-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        let t = LogTarget::new(Some(path.clone())).unwrap();
        t.make_writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("x.log.1")).unwrap();
        t.reopen().unwrap();
        t.make_writer().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("x.log.1")).unwrap(),
            "one\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
