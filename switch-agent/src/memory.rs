//! [`MemoryTarget`]: a [`Target`] that keeps table entries in memory (a
//! `talaria_tables::Contents`) and forwards nothing. It honours the trait's
//! semantics (duplicate keys, missing keys, table sizes, LPM host bits), so
//! the P4Runtime server can be tested, benchmarked and used for controller
//! development without root.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use talaria_common::maps::PacketBytes;
use talaria_tables::Contents;

use crate::entry::{CounterId, Entry, EntryKey, Table, Target, TargetError};

#[derive(Default)]
struct Tables {
    contents: Contents,
    counters: HashMap<(CounterId, u32), PacketBytes>,
    backend_counters: HashMap<u32, PacketBytes>,
}

/// An in-memory [`Target`] with a fixed capacity per table.
pub struct MemoryTarget {
    /// Capacity by table, in [`Table::ALL`] order.
    sizes: Vec<u32>,
    tables: Mutex<Tables>,
}

impl Default for MemoryTarget {
    fn default() -> Self {
        Self::new()
    }
}

fn position(table: Table) -> usize {
    Table::ALL
        .iter()
        .position(|t| *t == table)
        .expect("Table::ALL lists every table")
}

impl MemoryTarget {
    /// A target whose tables hold their P4 `size` entries, as the data
    /// plane's do.
    pub fn new() -> Self {
        Self::with_sizes(Table::size)
    }

    /// A target whose tables hold `size(table)` entries each.
    pub fn with_sizes(size: impl Fn(Table) -> u32) -> Self {
        Self {
            sizes: Table::ALL.iter().map(|t| size(*t)).collect(),
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
    pub fn len(&self, table: Table) -> usize {
        self.lock().contents.len(table)
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Refuses an LPM key with bits set beyond its prefix length, as the data
/// plane's tries do.
fn check(key: &EntryKey) -> Result<(), TargetError> {
    let def = key.table().def();
    for (f, v) in def.fields.iter().zip(key.values()) {
        // Exact fields have no prefix length.
        let Some(len) = v.prefix_len else {
            continue;
        };
        let len = u32::from(len);
        if len > f.bits {
            return Err(TargetError::Invalid(format!(
                "{}: prefix length {len} > {}",
                f.name, f.bits
            )));
        }
        let host_bits = u128::MAX.checked_shr(128 - (f.bits - len)).unwrap_or(0);
        if v.value & host_bits != 0 {
            return Err(TargetError::Invalid(format!(
                "{}: {:#x}/{len} has host bits set",
                f.name, v.value
            )));
        }
    }
    Ok(())
}

impl Target for MemoryTarget {
    fn insert(&self, entry: &Entry) -> Result<(), TargetError> {
        let key = entry.key();
        check(&key)?;
        let size = self.sizes[position(entry.table())];
        let mut t = self.lock();
        if t.contents.get(&key).is_some() {
            return Err(TargetError::AlreadyExists);
        }
        if t.contents.len(entry.table()) >= size as usize {
            return Err(TargetError::Full { size });
        }
        t.contents.insert(*entry);
        Ok(())
    }

    fn modify(&self, entry: &Entry) -> Result<(), TargetError> {
        let key = entry.key();
        check(&key)?;
        let mut t = self.lock();
        if t.contents.get(&key).is_none() {
            return Err(TargetError::NotFound);
        }
        t.contents.insert(*entry);
        Ok(())
    }

    fn delete(&self, key: &EntryKey) -> Result<(), TargetError> {
        match self.lock().contents.remove(key) {
            Some(_) => Ok(()),
            None => Err(TargetError::NotFound),
        }
    }

    fn entries(&self, table: Table) -> Result<Vec<Entry>, TargetError> {
        Ok(self.lock().contents.entries(table).collect())
    }

    fn get(&self, key: &EntryKey) -> Result<Option<Entry>, TargetError> {
        Ok(self.lock().contents.get(key))
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
        let key = EntryKey::Backend(talaria_tables::backend::Key { backend_id });
        if t.contents.get(&key).is_none() {
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
    use std::net::Ipv4Addr;

    use talaria_tables::{pod_node, value::Ipv4Prefix};

    use super::*;

    /// A `pod_node` entry for `addr/len`, host bits as given.
    fn route(addr: [u8; 4], len: u8) -> Entry {
        Entry::PodNode(pod_node::Entry {
            key: pod_node::Key {
                pod_addr: Ipv4Prefix {
                    addr: addr.into(),
                    len,
                },
            },
            action: pod_node::Action::SetClientNode {
                node_ip: Ipv4Addr::new(10, 0, 0, 1),
            },
        })
    }

    #[test]
    fn honours_the_target_semantics() {
        let t = MemoryTarget::with_sizes(|k| if k == Table::PodNode { 2 } else { 10 });
        t.insert(&route([10, 1, 0, 0], 16)).unwrap();
        assert!(matches!(
            t.insert(&route([10, 1, 0, 0], 16)),
            Err(TargetError::AlreadyExists)
        ));
        assert!(matches!(
            t.insert(&route([10, 1, 0, 1], 16)),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            t.insert(&route([10, 1, 0, 0], 33)),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            t.insert(&route([1, 0, 0, 0], 0)),
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
        t.delete(&route([10, 2, 0, 0], 16).key()).unwrap();
        assert!(matches!(
            t.delete(&route([10, 2, 0, 0], 16).key()),
            Err(TargetError::NotFound)
        ));
        assert_eq!(
            t.entries(Table::PodNode).unwrap(),
            vec![route([10, 1, 0, 0], 16)]
        );
        assert_eq!(
            t.get(&route([10, 1, 0, 0], 16).key()).unwrap(),
            Some(route([10, 1, 0, 0], 16))
        );
        assert_eq!(t.len(Table::Backend), 0);
        assert!(matches!(t.backend_counter(1), Err(TargetError::NotFound)));
    }

    #[test]
    fn tables_have_their_p4_sizes() {
        let t = MemoryTarget::new();
        for table in Table::ALL {
            assert_eq!(t.sizes[position(*table)], table.size());
        }
    }
}
