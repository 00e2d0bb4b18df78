//! Quotas and per-domain accounting.
//!
//! The quota names, defaults and meaning follow C xenstored (see
//! `docs/compat.md` for the comparison we chose). A hard value of 0
//! disables a check. Quotas never apply to privileged connections.
//! Each domain copies the global values when its record is created, so a
//! change of a global value affects only domains created afterwards.

use std::fmt;

/// An accounted item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quota {
    /// Nodes owned by the domain.
    Nodes,
    /// Watches registered by the domain.
    Watches,
    /// Requests not yet answered (or whose events are undelivered).
    Outstanding,
    /// Bytes of nodes (record and path), watches, open transactions and
    /// the daemon's queued output charged to the domain.
    Memory,
    /// Open transactions.
    Transactions,
    /// Distinct nodes touched by one transaction.
    TransactionNodes,
    /// Entries in one SET_PERMS.
    NodePermissions,
    /// Length of the relative part of a path.
    PathMax,
    /// Accounted size of one node record.
    NodeSize,
}

impl Quota {
    /// Every quota, in the order GET_QUOTA lists them.
    pub const ALL: [Quota; 9] = [
        Quota::Nodes,
        Quota::Watches,
        Quota::Outstanding,
        Quota::Memory,
        Quota::Transactions,
        Quota::TransactionNodes,
        Quota::NodePermissions,
        Quota::PathMax,
        Quota::NodeSize,
    ];

    /// The protocol name.
    pub const fn name(self) -> &'static str {
        match self {
            Quota::Nodes => "nodes",
            Quota::Watches => "watches",
            Quota::Outstanding => "outstanding",
            Quota::Memory => "memory",
            Quota::Transactions => "transactions",
            Quota::TransactionNodes => "transaction-nodes",
            Quota::NodePermissions => "node-permissions",
            Quota::PathMax => "path-max",
            Quota::NodeSize => "node-size",
        }
    }

    /// A short description, for `CONTROL quota`.
    pub const fn description(self) -> &'static str {
        match self {
            Quota::Nodes => "Nodes per domain",
            Quota::Watches => "Watches per domain",
            Quota::Outstanding => "Outstanding requests per domain",
            Quota::Memory => "Memory used by a domain (bytes)",
            Quota::Transactions => "Transactions per domain",
            Quota::TransactionNodes => "Nodes accessed per transaction",
            Quota::NodePermissions => "Permission entries per node",
            Quota::PathMax => "Maximum length of a node path",
            Quota::NodeSize => "Maximum size of a node (bytes)",
        }
    }

    /// Looks a quota up by name.
    pub fn from_name(name: &[u8]) -> Option<Quota> {
        Quota::ALL
            .iter()
            .copied()
            .find(|q| q.name().as_bytes() == name)
    }

    /// Index into per-quota arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the quota has a soft (warning-only) value.
    pub const fn has_soft(self) -> bool {
        matches!(self, Quota::Memory)
    }

    /// Whether the quota is a per-domain counter (as opposed to a limit on
    /// one request or one object).
    pub const fn is_counter(self) -> bool {
        matches!(
            self,
            Quota::Nodes
                | Quota::Watches
                | Quota::Outstanding
                | Quota::Memory
                | Quota::Transactions
        )
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest value `path-max` may take.
pub const PATH_MAX_LIMIT: u64 = 2048;

/// A set of quota values (hard, plus the soft memory value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSet {
    /// Hard values, indexed by [`Quota::index`]; 0 disables.
    pub hard: [u64; 9],
    /// The soft memory value; 0 disables.
    pub soft_memory: u64,
}

impl Default for QuotaSet {
    fn default() -> QuotaSet {
        QuotaSet {
            hard: [1000, 128, 20, 2_621_440, 10, 1024, 5, PATH_MAX_LIMIT, 2048],
            soft_memory: 2_097_152,
        }
    }
}

impl QuotaSet {
    /// The hard value of `q`.
    pub fn get(&self, q: Quota) -> u64 {
        self.hard[q.index()]
    }

    /// Sets the hard value of `q` (`path-max` is capped at 2048).
    pub fn set(&mut self, q: Quota, v: u64) {
        self.hard[q.index()] = if q == Quota::PathMax {
            v.min(PATH_MAX_LIMIT)
        } else {
            v
        };
    }

    /// True if `value` is over the hard quota `q` (values up to and
    /// including the quota are allowed; 0 disables the check).
    pub fn exceeds(&self, q: Quota, value: u64) -> bool {
        let limit = self.get(q);
        limit != 0 && value > limit
    }
}

/// Current usage of the counter quotas of one domain, with the maxima seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Current values, indexed by [`Quota::index`] (only counters used).
    pub now: [u64; 9],
    /// Largest value seen since start or the last reset.
    pub max: [u64; 9],
}

impl Usage {
    /// Current value.
    pub fn get(&self, q: Quota) -> u64 {
        self.now[q.index()]
    }

    /// Adds a signed delta, saturating at 0, and records the maximum.
    pub fn add(&mut self, q: Quota, delta: i64) {
        let i = q.index();
        self.now[i] = self.now[i].saturating_add_signed(delta);
        self.max[i] = self.max[i].max(self.now[i]);
    }

    /// Records a one-off value (per-request limits) in the maxima.
    pub fn observe(&mut self, q: Quota, value: u64) {
        let i = q.index();
        self.max[i] = self.max[i].max(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults() {
        let names: Vec<_> = Quota::ALL.iter().map(|q| q.name()).collect();
        assert_eq!(
            names.join(" "),
            "nodes watches outstanding memory transactions transaction-nodes node-permissions path-max node-size"
        );
        let d = QuotaSet::default();
        assert_eq!(d.get(Quota::Nodes), 1000);
        assert!(!d.exceeds(Quota::Nodes, 1000));
        assert!(d.exceeds(Quota::Nodes, 1001));
        let mut z = d;
        z.set(Quota::Nodes, 0);
        assert!(!z.exceeds(Quota::Nodes, u64::MAX));
        z.set(Quota::PathMax, 5000);
        assert_eq!(z.get(Quota::PathMax), 2048);
    }
}
