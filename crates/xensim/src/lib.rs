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
//! Still to come (issue 3): the simulator process with ring pages in shared
//! memory, the ABI-compatible stand-ins for `libxenevtchn.so.1`,
//! `libxengnttab.so.1` and `libxenmanage.so.1`, simulated guests speaking
//! Xenstore over their ring (the ring protocol is `xenstore_proto::ring`),
//! and the toolstack commands.

pub mod hypervisor;

pub use hypervisor::{Calls, DomainInfo, Errno, Hypervisor, Life, ShutdownReason};
