//! Accounting summaries for `CONTROL quota max`.

use crate::quota::Quota;
use crate::Store;

impl Store {
    /// The largest value of each accounted item seen in any unprivileged
    /// domain known now, indexed by [`Quota::index`].
    pub fn max_seen(&self) -> [u64; 9] {
        let mut max = [0u64; 9];
        for d in self.domains.values() {
            if d.domid == self.cfg.priv_domid {
                continue;
            }
            for q in Quota::ALL {
                let i = q.index();
                max[i] = max[i].max(d.usage.max[i]);
            }
        }
        max
    }

    /// Resets the maxima to the current values (`quota max -r`).
    pub fn reset_max_seen(&mut self) {
        for d in self.domains.values_mut() {
            d.usage.max = d.usage.now;
        }
    }
}
