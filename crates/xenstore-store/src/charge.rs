//! PROVISIONAL (replaced by the store-accounting branch): daemon-held
//! charges.
use crate::quota::Quota;
use crate::Store;

impl Store {
    /// Adds bytes held by the daemon for `domid` to its memory usage.
    pub fn charge_memory(&mut self, domid: u32, delta: i64) {
        self.domain_record(domid).usage.add(Quota::Memory, delta);
    }
    /// True if `bytes` more would take an unprivileged domain over its
    /// hard memory quota.
    pub fn memory_would_exceed(&self, domid: u32, bytes: u64) -> bool {
        if domid == self.config().priv_domid {
            return false;
        }
        self.domain(domid).is_some_and(|d| {
            d.quota
                .exceeds(Quota::Memory, d.usage.get(Quota::Memory) + bytes)
        })
    }
    /// True if the domain is at or over its hard memory quota.
    pub fn memory_full(&self, domid: u32) -> bool {
        if domid == self.config().priv_domid {
            return false;
        }
        self.domain(domid).is_some_and(|d| {
            let q = d.quota.get(Quota::Memory);
            q != 0 && d.usage.get(Quota::Memory) >= q
        })
    }
    /// Adds to the domain's outstanding counter.
    pub fn charge_outstanding(&mut self, domid: u32, delta: i64) {
        self.domain_record(domid)
            .usage
            .add(Quota::Outstanding, delta);
    }
    /// True if an unprivileged domain has as many outstanding requests as
    /// its quota allows.
    pub fn outstanding_full(&self, domid: u32) -> bool {
        if domid == self.config().priv_domid {
            return false;
        }
        self.domain(domid).is_some_and(|d| {
            let q = d.quota.get(Quota::Outstanding);
            q != 0 && d.usage.get(Quota::Outstanding) >= q
        })
    }
}
