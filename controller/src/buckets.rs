//! Resilient bucket assignment.
//!
//! Each service has `2^k` buckets (the switch masks the hash: Tofino has no
//! modulo). A bucket names a backend id. When the backend set changes, the
//! assignment changes as little as possible:
//!
//! - Buckets of surviving backends stay put unless their backend holds more
//!   than its fair share (`⌊S/N⌋` or `⌈S/N⌉`); the extra share goes to the
//!   backends that hold the most already, so a balanced assignment stays
//!   almost untouched.
//! - Freed buckets (removed backend, over-quota) go round-robin to backends
//!   under quota.
//!
//! So removing one of N backends moves only that backend's buckets (about
//! S/N), and adding one moves about S/(N+1) buckets to it; the property test
//! below checks `moved ≤ ⌈S/N_max⌉ + 1`-style bounds.
//!
//! **Resizing policy.** The size target is `next_pow2(N × per_backend)`
//! clamped to `[min, max]`. Growing by doubling moves no flow at all (bucket
//! `b` and `b + S` both keep the old owner of `b`, and `h & (2S−1)` is one of
//! those two), so the table grows as soon as the target is larger. Halving
//! moves up to half the flows, so the table shrinks only when it is more than
//! `shrink_factor` times the target: small changes never shrink it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How many buckets a service gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketPolicy {
    /// Buckets per active backend before rounding up to a power of two.
    pub per_backend: u32,
    /// Fewest buckets a service with backends gets (power of two).
    pub min: u32,
    /// Most buckets a service gets (power of two, ≤ 65536: bucket is 16 bits).
    pub max: u32,
    /// Shrink only when the current size exceeds the target by this factor.
    pub shrink_factor: u32,
}

impl Default for BucketPolicy {
    fn default() -> Self {
        Self {
            per_backend: 4,
            min: 16,
            max: 1024,
            shrink_factor: 4,
        }
    }
}

impl BucketPolicy {
    /// Clamps the fields into a usable range (powers of two, max ≤ 65536).
    pub fn normalized(mut self) -> Self {
        self.max = self.max.clamp(1, 65536).next_power_of_two().min(65536);
        self.min = self
            .min
            .clamp(1, self.max)
            .next_power_of_two()
            .min(self.max);
        self.per_backend = self.per_backend.max(1);
        self.shrink_factor = self.shrink_factor.max(2);
        self
    }

    /// The size target for `n` backends.
    pub fn target(&self, n: usize) -> usize {
        let want = (n as u64)
            .saturating_mul(u64::from(self.per_backend))
            .max(1);
        let p = want.next_power_of_two().min(u64::from(self.max));
        p.max(u64::from(self.min)) as usize
    }

    /// The size to use given the current size (0 = none yet).
    pub fn size(&self, n: usize, current: usize) -> usize {
        let target = self.target(n);
        if current == 0 || !current.is_power_of_two() || current > self.max as usize {
            return target;
        }
        if target > current {
            return target;
        }
        if current > target.saturating_mul(self.shrink_factor as usize) {
            return target;
        }
        current
    }
}

/// Resizes `old` to `size` (both powers of two) keeping the flow mapping
/// where possible: doubling copies, halving keeps the lower half.
pub fn resize(old: &[u32], size: usize) -> Vec<u32> {
    if old.is_empty() {
        return vec![0; size];
    }
    (0..size).map(|b| old[b % old.len()]).collect()
}

/// Reassigns `buckets` in place for the backend set `backends`, moving as few
/// buckets as possible. Buckets holding an id not in `backends` (or 0) are
/// reassigned. With no backends, every bucket becomes 0.
pub fn rebalance(buckets: &mut [u32], backends: &BTreeSet<u32>) {
    let s = buckets.len();
    if backends.is_empty() {
        buckets.iter_mut().for_each(|b| *b = 0);
        return;
    }
    if s == 0 {
        return;
    }
    let n = backends.len();
    let mut held: BTreeMap<u32, Vec<usize>> = backends.iter().map(|&b| (b, Vec::new())).collect();
    let mut free: Vec<usize> = Vec::new();
    for (i, &b) in buckets.iter().enumerate() {
        match held.get_mut(&b) {
            Some(v) => v.push(i),
            None => free.push(i),
        }
    }
    let base = s / n;
    let extra = s % n;
    // The `extra` backends holding the most get ⌈S/N⌉.
    let mut order: Vec<u32> = backends.iter().copied().collect();
    order.sort_by(|a, b| held[b].len().cmp(&held[a].len()).then(a.cmp(b)));
    let quota: BTreeMap<u32, usize> = order
        .iter()
        .enumerate()
        .map(|(i, &b)| (b, base + usize::from(i < extra)))
        .collect();
    for (b, v) in held.iter_mut() {
        let q = quota[b];
        while v.len() > q {
            free.push(v.pop().expect("len > q ≥ 0"));
        }
    }
    free.sort_unstable();
    // Round-robin the free buckets over backends under quota.
    let mut need: Vec<(u32, usize)> = order
        .iter()
        .map(|b| (*b, quota[b] - held[b].len()))
        .filter(|(_, k)| *k > 0)
        .collect();
    let mut fi = free.into_iter();
    while !need.is_empty() {
        for (b, k) in need.iter_mut() {
            if let Some(i) = fi.next() {
                buckets[i] = *b;
                *k -= 1;
            }
        }
        need.retain(|(_, k)| *k > 0);
    }
}

/// The assignment for `backends` given the previous one, sized by `policy`.
pub fn assign(old: &[u32], backends: &BTreeSet<u32>, policy: &BucketPolicy) -> Vec<u32> {
    if backends.is_empty() {
        return Vec::new();
    }
    let size = policy.size(backends.len(), old.len());
    let mut v = resize(old, size);
    rebalance(&mut v, backends);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(v: &[u32]) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for b in v {
            *m.entry(*b).or_default() += 1;
        }
        m
    }

    fn moved(a: &[u32], b: &[u32]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    fn balanced(v: &[u32], set: &BTreeSet<u32>) {
        let c = counts(v);
        assert!(c.keys().all(|k| set.contains(k)), "foreign id in {c:?}");
        let lo = v.len() / set.len();
        for b in set {
            let k = c.get(b).copied().unwrap_or(0);
            assert!(
                k == lo || k == lo + 1,
                "backend {b} has {k}, want {lo} or {}",
                lo + 1
            );
        }
    }

    #[test]
    fn policy_sizes() {
        let p = BucketPolicy::default();
        assert_eq!(p.target(0), 16);
        assert_eq!(p.target(1), 16);
        assert_eq!(p.target(3), 16);
        assert_eq!(p.target(5), 32);
        assert_eq!(p.target(10), 64);
        assert_eq!(p.target(1000), 1024);
        // Grows at once; shrinks only past 4× the target.
        assert_eq!(p.size(5, 16), 32);
        assert_eq!(p.size(2, 64), 64);
        assert_eq!(p.size(1, 64), 64);
        assert_eq!(p.size(1, 128), 16);
    }

    #[test]
    fn doubling_moves_no_flow() {
        let set: BTreeSet<u32> = (1..=5).collect();
        let v = assign(&[], &set, &BucketPolicy::default());
        let g = resize(&v, v.len() * 2);
        for h in 0u32..10_000 {
            let h = h.wrapping_mul(2_654_435_761);
            assert_eq!(
                v[(h as usize) & (v.len() - 1)],
                g[(h as usize) & (g.len() - 1)]
            );
        }
    }

    #[test]
    fn fresh_assignment_is_balanced_and_interleaved() {
        let set: BTreeSet<u32> = [7, 9, 11].into();
        let v = assign(&[], &set, &BucketPolicy::default());
        assert_eq!(v.len(), 16);
        balanced(&v, &set);
        assert_ne!(v[0], v[1]);
        assert!(assign(&v, &BTreeSet::new(), &BucketPolicy::default()).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Adding one backend to N moves at most ⌈S/(N+1)⌉ buckets, all to
        /// the new backend; removing one moves only its own ≤ ⌈S/N⌉ buckets.
        #[test]
        fn one_change_moves_about_one_nth(
            n in 1usize..64,
            log_size in 4u32..12,
            history in proptest::collection::vec(any::<bool>(), 0..6),
            victim in any::<prop::sample::Index>(),
        ) {
            let s = 1usize << log_size;
            // Reach a realistic (not fresh) assignment through some churn.
            let mut set: BTreeSet<u32> = (1..=n as u32).collect();
            let mut v = resize(&[], s);
            rebalance(&mut v, &set);
            let mut next = n as u32 + 1;
            for add in history {
                if add || set.len() == 1 {
                    set.insert(next);
                    next += 1;
                } else {
                    let x = *set.iter().nth(set.len() / 2).unwrap();
                    set.remove(&x);
                }
                rebalance(&mut v, &set);
                balanced(&v, &set);
            }
            let n = set.len();

            // Add one.
            let mut added = set.clone();
            added.insert(next);
            let mut w = v.clone();
            rebalance(&mut w, &added);
            balanced(&w, &added);
            let m = moved(&v, &w);
            prop_assert!(m <= s.div_ceil(n + 1), "add: moved {} of {} with N={}", m, s, n);
            for (a, b) in v.iter().zip(&w) {
                prop_assert!(a == b || *b == next, "a bucket moved to an old backend");
            }

            // Remove one.
            if n > 1 {
                let x = *set.iter().nth(victim.index(n)).unwrap();
                let mut removed = set.clone();
                removed.remove(&x);
                let mut w = v.clone();
                rebalance(&mut w, &removed);
                balanced(&w, &removed);
                let m = moved(&v, &w);
                prop_assert!(m <= s.div_ceil(n), "remove: moved {} of {} with N={}", m, s, n);
                for (a, b) in v.iter().zip(&w) {
                    prop_assert!(a == b || *a == x, "a surviving backend's bucket moved");
                }
            }
        }
    }
}
