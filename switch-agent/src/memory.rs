//! [`MemoryTarget`]: a [`Target`] that keeps table entries in hash maps and
//! forwards nothing. It honours the trait's semantics (duplicate keys,
//! missing keys, table sizes, LPM host bits), so the P4Runtime server can be
//! tested, benchmarked and used for controller development without root.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard},
};

use talaria_common::maps::PacketBytes;

use crate::entry::{CounterId, Entry, Ipv4Prefix, TableKind, Target, TargetError};

/// The match key of an [`Entry`]: what makes two entries the same entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKey {
    Ipv4Route(Ipv4Prefix),
    SwitchAddr(Ipv4Addr),
    ServiceV4 { vip: Ipv4Addr, port: u16, proto: u8 },
    CookieCheck { service_id: u16, backend_id: u32 },
    LbBucket { service_id: u16, bucket: u16 },
    Backend(u32),
    PodNode(Ipv4Prefix),
}

impl EntryKey {
    /// The key of `entry`.
    pub fn of(entry: &Entry) -> Self {
        match *entry {
            Entry::Ipv4Route { dst, .. } => Self::Ipv4Route(dst),
            Entry::SwitchAddr { addr } => Self::SwitchAddr(addr),
            Entry::ServiceV4 {
                vip, port, proto, ..
            } => Self::ServiceV4 { vip, port, proto },
            Entry::CookieCheck {
                service_id,
                backend_id,
            } => Self::CookieCheck {
                service_id,
                backend_id,
            },
            Entry::LbBucket {
                service_id, bucket, ..
            } => Self::LbBucket { service_id, bucket },
            Entry::Backend { backend_id, .. } => Self::Backend(backend_id),
            Entry::PodNode { dst, .. } => Self::PodNode(dst),
        }
    }
}

/// Every table kind, in P4 declaration order.
pub const TABLES: [TableKind; 7] = [
    TableKind::Ipv4Route,
    TableKind::SwitchAddr,
    TableKind::ServiceV4,
    TableKind::CookieCheck,
    TableKind::LbBucket,
    TableKind::Backend,
    TableKind::PodNode,
];

fn index(table: TableKind) -> usize {
    TABLES
        .iter()
        .position(|t| *t == table)
        .expect("TABLES lists every kind")
}

#[derive(Default)]
struct Tables {
    entries: [HashMap<EntryKey, Entry>; 7],
    counters: HashMap<(CounterId, u32), PacketBytes>,
    backend_counters: HashMap<u32, PacketBytes>,
}

/// An in-memory [`Target`] with a fixed capacity per table.
pub struct MemoryTarget {
    sizes: [u32; 7],
    tables: Mutex<Tables>,
}

impl MemoryTarget {
    /// A target whose tables hold `size(table)` entries each.
    pub fn new(size: impl Fn(TableKind) -> u32) -> Self {
        Self {
            sizes: TABLES.map(size),
            tables: Mutex::default(),
        }
    }

    /// Sets a counter cell, as the data plane would count packets.
    pub fn set_counter(&self, counter: CounterId, index: u32, value: PacketBytes) {
        self.lock().counters.insert((counter, index), value);
    }

    /// Sets the direct counter of a backend entry.
    pub fn set_backend_counter(&self, backend_id: u32, value: PacketBytes) {
        self.lock().backend_counters.insert(backend_id, value);
    }

    /// Number of entries in `table`.
    pub fn len(&self, table: TableKind) -> usize {
        self.lock().entries[index(table)].len()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check(entry: &Entry) -> Result<(), TargetError> {
    let prefix = match entry {
        Entry::Ipv4Route { dst, .. } | Entry::PodNode { dst, .. } => dst,
        _ => return Ok(()),
    };
    if prefix.len > 32 {
        return Err(TargetError::Invalid(format!(
            "prefix length {} > 32",
            prefix.len
        )));
    }
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.len))
        .unwrap_or(0);
    if u32::from(prefix.addr) & !mask != 0 {
        return Err(TargetError::Invalid(format!(
            "{}/{} has host bits set",
            prefix.addr, prefix.len
        )));
    }
    Ok(())
}

impl Target for MemoryTarget {
    fn insert(&self, entry: &Entry) -> Result<(), TargetError> {
        check(entry)?;
        let i = index(entry.table());
        let size = self.sizes[i];
        let mut t = self.lock();
        let table = &mut t.entries[i];
        let key = EntryKey::of(entry);
        if table.contains_key(&key) {
            return Err(TargetError::AlreadyExists);
        }
        if table.len() >= size as usize {
            return Err(TargetError::Full { size });
        }
        table.insert(key, *entry);
        Ok(())
    }

    fn modify(&self, entry: &Entry) -> Result<(), TargetError> {
        check(entry)?;
        let mut t = self.lock();
        match t.entries[index(entry.table())].get_mut(&EntryKey::of(entry)) {
            Some(e) => {
                *e = *entry;
                Ok(())
            }
            None => Err(TargetError::NotFound),
        }
    }

    fn delete(&self, entry: &Entry) -> Result<(), TargetError> {
        let mut t = self.lock();
        match t.entries[index(entry.table())].remove(&EntryKey::of(entry)) {
            Some(_) => Ok(()),
            None => Err(TargetError::NotFound),
        }
    }

    fn entries(&self, table: TableKind) -> Result<Vec<Entry>, TargetError> {
        Ok(self.lock().entries[index(table)]
            .values()
            .copied()
            .collect())
    }

    fn get(&self, key: &Entry) -> Result<Option<Entry>, TargetError> {
        Ok(self.lock().entries[index(key.table())]
            .get(&EntryKey::of(key))
            .copied())
    }

    fn counter(&self, counter: CounterId, index: u32) -> Result<PacketBytes, TargetError> {
        Ok(self
            .lock()
            .counters
            .get(&(counter, index))
            .copied()
            .unwrap_or_default())
    }

    fn backend_counter(&self, backend_id: u32) -> Result<PacketBytes, TargetError> {
        let t = self.lock();
        if !t.entries[index(TableKind::Backend)].contains_key(&EntryKey::Backend(backend_id)) {
            return Err(TargetError::NotFound);
        }
        Ok(t.backend_counters
            .get(&backend_id)
            .copied()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(addr: [u8; 4], len: u8) -> Entry {
        Entry::PodNode {
            dst: Ipv4Prefix {
                addr: addr.into(),
                len,
            },
            node_ip: Ipv4Addr::new(10, 0, 0, 1),
        }
    }

    #[test]
    fn honours_the_target_semantics() {
        let t = MemoryTarget::new(|k| if k == TableKind::PodNode { 2 } else { 10 });
        t.insert(&route([10, 1, 0, 0], 16)).unwrap();
        assert!(matches!(
            t.insert(&route([10, 1, 0, 0], 16)),
            Err(TargetError::AlreadyExists)
        ));
        assert!(matches!(
            t.insert(&route([10, 1, 0, 1], 16)),
            Err(TargetError::Invalid(_))
        ));
        t.insert(&route([10, 2, 0, 0], 16)).unwrap();
        assert!(matches!(
            t.insert(&route([10, 3, 0, 0], 16)),
            Err(TargetError::Full { size: 2 })
        ));
        assert!(matches!(
            t.modify(&route([10, 3, 0, 0], 16)),
            Err(TargetError::NotFound)
        ));
        t.delete(&route([10, 2, 0, 0], 16)).unwrap();
        assert!(matches!(
            t.delete(&route([10, 2, 0, 0], 16)),
            Err(TargetError::NotFound)
        ));
        assert_eq!(
            t.entries(TableKind::PodNode).unwrap(),
            vec![route([10, 1, 0, 0], 16)]
        );
        assert_eq!(t.len(TableKind::Backend), 0);
    }
}
