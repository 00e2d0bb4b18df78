//! rxenstored as a library: the daemon's state apart from its I/O
//! ([`state`]), the event loop ([`server`]), connections ([`conn`]), the Xen
//! side ([`xen`], [`domain_state`]), CONTROL, tracing, and the command line.
//! The binary (`main.rs`) only parses options, forks and runs the loop, so
//! the state can be driven by tests without the binary.

pub mod cli;
pub mod config;
pub mod conn;
pub mod control;
pub mod domain_state;
pub mod live_update;
pub mod logging;
pub mod notify;
pub mod server;
pub mod sim;
pub mod state;
pub mod trace;
pub mod xen;
