//! The Read RPC: table entries (wildcard per table, every table, a specific
//! key, the default entry), indirect counters (one cell, every cell, every
//! counter) and the direct counter of `backend`.

use talaria_p4rt::p4::v1::{
    entity, CounterData, CounterEntry, DirectCounterEntry, Entity, Index, ReadResponse, TableEntry,
};
use talaria_tables::{
    def::CounterDef,
    p4runtime::{decode, encode, encode_default, ActionUse, DecodeError, Decoded},
};
use tonic::Status;

use crate::{
    entry::{CounterId, Entry, Table, Target, TargetError},
    server::write::UpdateError,
};

/// Entities per ReadResponse message, to keep messages well under gRPC's
/// default 4 MiB limit.
pub const CHUNK: usize = 1000;

fn status(e: impl Into<UpdateError>) -> Status {
    let e = e.into();
    Status::new(e.code, e.message)
}

fn counter_data(p: talaria_common::maps::PacketBytes) -> CounterData {
    CounterData {
        byte_count: i64::try_from(p.bytes).unwrap_or(i64::MAX),
        packet_count: i64::try_from(p.packets).unwrap_or(i64::MAX),
    }
}

fn table_entity(te: TableEntry) -> Entity {
    Entity {
        entity: Some(entity::Entity::TableEntry(te)),
    }
}

/// The entries of `table` that `filter` selects: all of them for a wildcard
/// (no match fields), the one with `filter`'s key otherwise.
fn select(target: &dyn Target, table: Table, filter: &TableEntry) -> Result<Vec<Entry>, Status> {
    if filter.r#match.is_empty() {
        return target.entries(table).map_err(status);
    }
    let key = match decode(filter, ActionUse::Ignored).map_err(status)? {
        Decoded::Key(k) => k,
        Decoded::Entry(e) => e.key(),
        // A default entry has no match fields.
        Decoded::InitialDefault(_) => return target.entries(table).map_err(status),
    };
    Ok(target.get(&key).map_err(status)?.into_iter().collect())
}

fn read_table(
    target: &dyn Target,
    filter: &TableEntry,
    out: &mut Vec<Entity>,
) -> Result<(), Status> {
    let tables: Vec<Table> = if filter.table_id == 0 {
        if !filter.r#match.is_empty() || filter.is_default_action {
            return Err(Status::invalid_argument(
                "a read of every table (table_id 0) must have no match and no default flag",
            ));
        }
        Table::ALL.to_vec()
    } else {
        vec![Table::from_id(filter.table_id)
            .ok_or(DecodeError::UnknownTable(filter.table_id))
            .map_err(status)?]
    };
    for table in tables {
        if filter.is_default_action {
            out.push(table_entity(encode_default(table)));
            continue;
        }
        for e in select(target, table, filter)? {
            let mut te = encode(&e);
            if filter.counter_data.is_some() {
                if let Entry::Backend(b) = e {
                    match target.backend_counter(b.key.backend_id) {
                        Ok(p) => te.counter_data = Some(counter_data(p)),
                        // Deleted between the two reads.
                        Err(TargetError::NotFound) => continue,
                        Err(e) => return Err(status(e)),
                    }
                }
            }
            out.push(table_entity(te));
        }
    }
    Ok(())
}

fn read_counter(
    target: &dyn Target,
    filter: &CounterEntry,
    out: &mut Vec<Entity>,
) -> Result<(), Status> {
    let counters: Vec<(CounterId, &CounterDef)> = if filter.counter_id == 0 {
        CounterId::ALL.to_vec()
    } else {
        vec![CounterId::ALL
            .into_iter()
            .find(|(_, d)| d.id == filter.counter_id)
            .ok_or_else(|| {
                Status::not_found(format!("unknown counter id {}", filter.counter_id))
            })?]
    };
    for (counter, def) in counters {
        let cells = match &filter.index {
            Some(Index { index }) => {
                let i = u32::try_from(*index)
                    .ok()
                    .filter(|i| *i < def.size)
                    .ok_or_else(|| {
                        Status::out_of_range(format!(
                            "counter index {index} not in 0..{}",
                            def.size
                        ))
                    })?;
                i..i + 1
            }
            None => 0..def.size,
        };
        for i in cells {
            let data = target.counter(counter, i).map_err(status)?;
            out.push(Entity {
                entity: Some(entity::Entity::CounterEntry(CounterEntry {
                    counter_id: def.id,
                    index: Some(Index {
                        index: i64::from(i),
                    }),
                    data: Some(counter_data(data)),
                })),
            });
        }
    }
    Ok(())
}

/// The one table with a direct counter (`talaria_tables::DIRECT_COUNTERS`),
/// which [`Target::backend_counter`] reads.
const DIRECT_COUNTER_TABLE: Table = Table::Backend;

fn read_direct_counter(
    target: &dyn Target,
    filter: &DirectCounterEntry,
    out: &mut Vec<Entity>,
) -> Result<(), Status> {
    let te = filter.table_entry.clone().unwrap_or_default();
    let table = DIRECT_COUNTER_TABLE;
    if te.table_id != 0 && te.table_id != table.id() {
        return Err(Status::invalid_argument(format!(
            "table id {} has no direct counter",
            te.table_id
        )));
    }
    let te = TableEntry {
        table_id: table.id(),
        ..te
    };
    for e in select(target, table, &te)? {
        let Entry::Backend(b) = e else {
            continue;
        };
        let data = match target.backend_counter(b.key.backend_id) {
            Ok(p) => p,
            Err(TargetError::NotFound) => continue,
            Err(e) => return Err(status(e)),
        };
        out.push(Entity {
            entity: Some(entity::Entity::DirectCounterEntry(DirectCounterEntry {
                table_entry: Some(encode(&e)),
                data: Some(counter_data(data)),
            })),
        });
    }
    Ok(())
}

/// Every entity the Read filters select, in ReadResponse chunks.
pub fn read(target: &dyn Target, filters: &[Entity]) -> Result<Vec<ReadResponse>, Status> {
    let mut out = Vec::new();
    for f in filters {
        match &f.entity {
            Some(entity::Entity::TableEntry(te)) => read_table(target, te, &mut out)?,
            Some(entity::Entity::CounterEntry(c)) => read_counter(target, c, &mut out)?,
            Some(entity::Entity::DirectCounterEntry(d)) => {
                read_direct_counter(target, d, &mut out)?
            }
            Some(_) => {
                return Err(Status::unimplemented(
                    "only table entries, counters and direct counters can be read",
                ))
            }
            None => return Err(Status::invalid_argument("read entity is empty")),
        }
    }
    if out.is_empty() {
        // One empty response, as PI/bmv2 send.
        return Ok(vec![ReadResponse::default()]);
    }
    let mut chunks = Vec::with_capacity(out.len().div_ceil(CHUNK));
    let mut rest = out.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(ReadResponse {
            entities: rest.by_ref().take(CHUNK).collect(),
        });
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_the_only_table_with_a_direct_counter() {
        let tables: Vec<Table> = talaria_tables::DIRECT_COUNTERS
            .iter()
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(tables, [DIRECT_COUNTER_TABLE]);
        for t in Table::ALL {
            assert_eq!(
                t.def().direct_counter.is_some(),
                *t == DIRECT_COUNTER_TABLE,
                "{t}"
            );
        }
    }
}
