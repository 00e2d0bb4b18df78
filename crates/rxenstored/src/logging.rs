//! Daemon logging through `tracing`: to standard error, or to a file
//! (`--log-file`) that SIGHUP reopens for log rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go; cheap to clone.
#[derive(Clone, Debug)]
pub struct LogTarget {
    path: Option<PathBuf>,
    file: Arc<Mutex<Option<File>>>,
}

impl LogTarget {
    /// Logs to `path`, or to standard error.
    pub fn new(path: Option<PathBuf>) -> io::Result<LogTarget> {
        let t = LogTarget {
            path,
            file: Arc::new(Mutex::new(None)),
        };
        t.reopen()?;
        Ok(t)
    }

    /// Reopens the file (after rotation).
    pub fn reopen(&self) -> io::Result<()> {
        if let Some(p) = &self.path {
            let f = OpenOptions::new().create(true).append(true).open(p)?;
            if let Ok(mut g) = self.file.lock() {
                *g = Some(f);
            }
        }
        Ok(())
    }

    /// Installs the global subscriber.
    pub fn install(&self, verbose: bool) {
        let default = if verbose { "debug" } else { "info" };
        let filter = tracing_subscriber::EnvFilter::try_from_env("RXENSTORED_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(self.clone())
            .with_ansi(false)
            .try_init();
    }
}

/// One log write.
pub struct LogWriter(Arc<Mutex<Option<File>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock() {
            Ok(mut g) => match g.as_mut() {
                Some(f) => f.write(buf),
                None => io::stderr().write(buf),
            },
            Err(_) => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogTarget {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.file.clone())
    }
}
