//! The Xenstore database engine, independent of any I/O.
//!
//! [`Store`] is a deterministic engine: `(connection, request) -> (replies
//! and watch events in queue order, side effects)`. It owns
//!
//! * the node tree ([`node`], [`db`], [`blobs`]): binary-safe values,
//!   permissions, child lists in creation order, per-node generation
//!   counts, committed nodes in an arena of compact slots;
//! * permissions ([`access`]): owners, ACLs, privileged connections,
//!   SET_TARGET, `DOMID_ANY`, entries naming unknown domains, or domains
//!   whose record is newer than the node's last change, ignored;
//! * quotas and per-domain accounting ([`quota`]), with C xenstored's
//!   names and defaults;
//! * transactions: C xenstored's per-node generation scheme, where a
//!   transaction records what it touches and a commit fails with `EAGAIN`
//!   only if one of those nodes changed; nothing is copied at start;
//! * watches ([`watch`]): absolute, relative and special paths, depth,
//!   permission-filtered events for committed changes only;
//! * domain records: introduction, release, shutdown, features, the
//!   removal of a dead domain's nodes and ACL entries;
//! * its part of a live update ([`migrate`]): nodes, watches and domain
//!   records as records of Xen's migration stream, and back.
//!
//! The daemon (`rxenstored`) feeds it requests and carries out the
//! [`Effect`]s; the hypervisor is reached only through [`DomainOracle`].

pub mod access;
pub mod blobs;
pub mod db;
mod domain;
pub mod migrate;
pub mod node;
mod ops;
pub mod quota;
mod report;
mod store;
pub mod watch;

pub use store::{
    ConnKind, Domain, DomainOracle, Effect, NoHypervisor, Outcome, Store, StoreConfig,
    INTRODUCE_DOMAIN, RELEASE_DOMAIN, SUPPORTED_FEATURES,
};

/// Identifies one client connection (socket or ring) to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);
