//! Id allocation for service ids (16 bits) and backend ids (32 bits).
//!
//! An id names something in a cookie that clients may hold for as long as a
//! connection lives, so an id is never handed to a *different* key while it
//! is in use or in quarantine (released less than `quarantine` ago). The
//! same key coming back during quarantine gets its old id back, which is
//! harmless (it names the same thing).
//!
//! Allocation is next-fit from a cursor that only moves forward (wrapping),
//! so ids are reused as late as possible even beyond the quarantine. On
//! start the planner adopts the ids it reads back from the switch and puts
//! the cursor after the largest one; ids that were released before a
//! controller restart and are no longer on the switch cannot be known, and
//! the forward-moving cursor is what keeps them from being reused soon.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// Errors of id allocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Every id is in use or in quarantine.
    #[error("{pool} ids exhausted ({in_use} in use, {quarantined} in quarantine)")]
    Exhausted {
        /// Which pool.
        pool: &'static str,
        /// Ids held by live keys.
        in_use: usize,
        /// Ids waiting out their quarantine.
        quarantined: usize,
    },
    /// Adopting an id that another key already holds (the switch is
    /// inconsistent, e.g. two service_v4 entries with one id).
    #[error("{pool} id {id} read back for two keys")]
    Conflict {
        /// Which pool.
        pool: &'static str,
        /// The id.
        id: u64,
    },
}

#[derive(Debug, Clone)]
struct Slot<K> {
    key: K,
    /// `Some(t)`: released at `t`, in quarantine.
    released: Option<Instant>,
}

/// A pool of ids `1..=max` for keys `K`.
#[derive(Debug, Clone)]
pub struct IdPool<K: Ord + Clone> {
    name: &'static str,
    max: u64,
    quarantine: Duration,
    by_key: BTreeMap<K, u64>,
    by_id: BTreeMap<u64, Slot<K>>,
    cursor: u64,
}

impl<K: Ord + Clone> IdPool<K> {
    /// A pool handing out `1..=max`, keeping released ids out of use for
    /// `quarantine`.
    pub fn new(name: &'static str, max: u64, quarantine: Duration) -> Self {
        Self {
            name,
            max,
            quarantine,
            by_key: BTreeMap::new(),
            by_id: BTreeMap::new(),
            cursor: 0,
        }
    }

    /// The id of `key`, if it has one (live or quarantined).
    pub fn get(&self, key: &K) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// The key holding `id` (live or quarantined).
    pub fn key_of(&self, id: u64) -> Option<&K> {
        self.by_id.get(&id).map(|s| &s.key)
    }

    /// Records that `key` holds `id` (read back from the switch).
    pub fn adopt(&mut self, key: K, id: u64) -> Result<(), IdError> {
        if id == 0 || id > self.max {
            return Err(IdError::Conflict {
                pool: self.name,
                id,
            });
        }
        match self.by_id.get(&id) {
            Some(s) if s.key != key => {
                return Err(IdError::Conflict {
                    pool: self.name,
                    id,
                })
            }
            _ => {}
        }
        if let Some(old) = self.by_key.insert(key.clone(), id) {
            if old != id {
                self.by_id.remove(&old);
            }
        }
        self.by_id.insert(
            id,
            Slot {
                key,
                released: None,
            },
        );
        self.cursor = self.cursor.max(id);
        Ok(())
    }

    /// The id for `key`, allocating one if needed; takes a quarantined id
    /// of the same key back into use.
    pub fn acquire(&mut self, key: &K, now: Instant) -> Result<u64, IdError> {
        if let Some(&id) = self.by_key.get(key) {
            if let Some(s) = self.by_id.get_mut(&id) {
                s.released = None;
            }
            return Ok(id);
        }
        if self.by_id.len() as u64 >= self.max {
            // Full: only now is it worth scanning for ended quarantines.
            self.sweep(now);
            if self.by_id.len() as u64 >= self.max {
                return Err(self.exhausted());
            }
        }
        // Next fit from the cursor, wrapping once.
        let mut id = self.cursor;
        for _ in 0..self.max {
            id = if id >= self.max { 1 } else { id + 1 };
            if !self.by_id.contains_key(&id) {
                self.cursor = id;
                self.by_key.insert(key.clone(), id);
                self.by_id.insert(
                    id,
                    Slot {
                        key: key.clone(),
                        released: None,
                    },
                );
                return Ok(id);
            }
        }
        Err(self.exhausted())
    }

    fn exhausted(&self) -> IdError {
        let quarantined = self.by_id.values().filter(|s| s.released.is_some()).count();
        IdError::Exhausted {
            pool: self.name,
            in_use: self.by_id.len() - quarantined,
            quarantined,
        }
    }

    /// Puts `key`'s id in quarantine (no-op if already there or unknown).
    pub fn release(&mut self, key: &K, now: Instant) {
        if let Some(id) = self.by_key.get(key) {
            if let Some(s) = self.by_id.get_mut(id) {
                s.released.get_or_insert(now);
            }
        }
    }

    /// Releases every live key for which `keep` is false.
    pub fn release_unless(&mut self, now: Instant, mut keep: impl FnMut(&K) -> bool) {
        for s in self.by_id.values_mut() {
            if s.released.is_none() && !keep(&s.key) {
                s.released = Some(now);
            }
        }
    }

    /// Forgets ids whose quarantine has ended.
    pub fn sweep(&mut self, now: Instant) {
        let q = self.quarantine;
        let expired: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, s)| {
                s.released
                    .is_some_and(|t| now.saturating_duration_since(t) >= q)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(s) = self.by_id.remove(&id) {
                self.by_key.remove(&s.key);
            }
        }
    }

    /// Ids held by live keys.
    pub fn in_use(&self) -> usize {
        self.by_id.values().filter(|s| s.released.is_none()).count()
    }

    /// Ids in quarantine.
    pub fn quarantined(&self) -> usize {
        self.by_id.len() - self.in_use()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_stable_per_key() {
        let now = Instant::now();
        let mut p = IdPool::new("t", 10, Duration::from_secs(60));
        let a = p.acquire(&"a", now).unwrap();
        let b = p.acquire(&"b", now).unwrap();
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(p.acquire(&"a", now).unwrap(), a);
    }

    #[test]
    fn quarantine_blocks_reuse_then_expires() {
        let t0 = Instant::now();
        let q = Duration::from_secs(60);
        let mut p = IdPool::new("t", 3, q);
        let ids: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|k| p.acquire(k, t0).unwrap())
            .collect();
        p.release(&"a", t0);
        // Full: 2 live + 1 quarantined.
        assert!(matches!(
            p.acquire(&"d", t0 + Duration::from_secs(59)),
            Err(IdError::Exhausted { .. })
        ));
        // The same key gets its id back during quarantine.
        assert_eq!(
            p.acquire(&"a", t0 + Duration::from_secs(1)).unwrap(),
            ids[0]
        );
        p.release(&"a", t0 + Duration::from_secs(2));
        let d = p.acquire(&"d", t0 + Duration::from_secs(62)).unwrap();
        assert_eq!(d, ids[0], "only free id after quarantine");
        assert_eq!(p.get(&"a"), None);
    }

    #[test]
    fn next_fit_does_not_reuse_early() {
        let t0 = Instant::now();
        let mut p = IdPool::new("t", 100, Duration::ZERO);
        let a = p.acquire(&"a", t0).unwrap();
        p.release(&"a", t0);
        let b = p.acquire(&"b", t0).unwrap();
        assert_ne!(a, b, "cursor moves on even when quarantine is zero");
    }

    #[test]
    fn adopt_sets_cursor_and_detects_conflicts() {
        let t0 = Instant::now();
        let mut p = IdPool::new("t", 1000, Duration::from_secs(1));
        p.adopt("x", 500).unwrap();
        assert_eq!(p.acquire(&"x", t0).unwrap(), 500);
        assert_eq!(p.acquire(&"y", t0).unwrap(), 501);
        assert!(p.adopt("z", 500).is_err());
        assert!(p.adopt("z", 0).is_err());
        assert!(p.adopt("z", 1001).is_err());
        p.release_unless(t0, |k| *k == "x");
        assert_eq!(p.in_use(), 1);
        assert_eq!(p.quarantined(), 1);
    }

    #[test]
    fn wraps_around_skipping_used() {
        let t0 = Instant::now();
        let mut p = IdPool::new("t", 3, Duration::ZERO);
        p.adopt("c", 3).unwrap();
        assert_eq!(p.acquire(&"a", t0).unwrap(), 1);
        assert_eq!(p.acquire(&"b", t0).unwrap(), 2);
        assert!(p.acquire(&"d", t0).is_err());
    }
}
