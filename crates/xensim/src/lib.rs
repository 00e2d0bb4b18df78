//! xensim: a hypervisor in user space, so that rxenstored and its guests
//! run and are tested on machines without Xen.
//!
//! This crate owns the simulated hypervisor's state ([`hypervisor`]):
//! domains with `unique_id` and their life cycle, event channels with
//! Linux's masked-until-unmask delivery, `VIRQ_DOM_EXC`, and the
//! changed-domain feed with libxenmanage's semantics. It counts every
//! hypervisor call, for benchmarks that must not depend on the simulator's
//! own speed.
//!
//! [`server::Sim`] runs that hypervisor behind a Unix socket
//! ([`protocol`]), with each domain's ring page a 4 KiB file mapped shared,
//! and dom0's ring and port exposed as `xsd_kva`/`xsd_port` like xenfs.
//! [`client::Client`] speaks the protocol. The `stubs/` crates build
//! ABI-compatible stand-ins for `libxenevtchn.so.1`, `libxengnttab.so.1`,
//! `libxenmanage.so.1` and `libxencall.so.1` on top of it, so xen-stable's production
//! backend runs unchanged against the simulator.
//!
//! [`guest::Guest`] is a simulated guest: it speaks Xenstore over its ring
//! page and event channel with the barrier discipline of
//! `xenstore_proto::ring`.
//!
//! [`toolstack::Toolstack`] does what libxl does around a guest's life, as
//! far as xenstored can see: create and introduce, shut down, destroy,
//! release.
//!
//! Still to come (issue 3): the `xensim` executable with these as
//! subcommands.

pub mod client;
pub mod ffi;
pub mod guest;
pub mod hypervisor;
pub mod protocol;
pub mod server;
pub mod stand_ins;
pub mod toolstack;

pub use client::Client;
pub use guest::Guest;
pub use hypervisor::{Calls, DomainInfo, Errno, Hypervisor, Life, ShutdownReason};
pub use server::Sim;
pub use toolstack::Toolstack;
