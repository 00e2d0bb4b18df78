//! Readiness notification to systemd (`sd_notify` protocol): one datagram
//! `READY=1` to the socket named by `NOTIFY_SOCKET` (a path, or `@name`
//! for the abstract namespace). Without `NOTIFY_SOCKET` it does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `READY=1` if `NOTIFY_SOCKET` is set. Returns whether a
/// notification was sent.
pub fn ready() -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(b"READY=1", &addr)?;
    } else if target.starts_with('/') {
        sock.send_to(b"READY=1", &target)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {target:?} is neither a path nor @abstract"),
        ));
    }
    Ok(true)
}
