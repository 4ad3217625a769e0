//! The Read RPC: table entries (wildcard per table, every table, a specific
//! key, the default entry), indirect counters (one cell, every cell, every
//! counter) and the direct counter of `backend`.

use talaria_p4rt::p4::v1::{
    entity, CounterData, CounterEntry, DirectCounterEntry, Entity, Index, ReadResponse, TableEntry,
};
use tonic::Status;

use crate::{
    entry::{Entry, Target, TargetError},
    layout::{CounterLayout, Layout, TableLayout},
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

/// The entries of `table` that `filter` selects: all of them for a wildcard,
/// the one with `filter`'s key otherwise.
fn select(
    layout: &Layout,
    target: &dyn Target,
    table: &TableLayout,
    filter: &TableEntry,
) -> Result<Vec<Entry>, Status> {
    match layout.decode_read_key(filter).map_err(status)? {
        None => target.entries(table.kind).map_err(status),
        Some(key) => Ok(target.get(&key).map_err(status)?.into_iter().collect()),
    }
}

fn read_table(
    layout: &Layout,
    target: &dyn Target,
    filter: &TableEntry,
    out: &mut Vec<Entity>,
) -> Result<(), Status> {
    let tables: Vec<&TableLayout> = if filter.table_id == 0 {
        if !filter.r#match.is_empty() || filter.is_default_action {
            return Err(Status::invalid_argument(
                "a read of every table (table_id 0) must have no match and no default flag",
            ));
        }
        layout.tables().iter().collect()
    } else {
        vec![layout.table_for(filter).map_err(status)?]
    };
    for table in tables {
        if filter.is_default_action {
            out.push(table_entity(layout.encode_default(table.kind)));
            continue;
        }
        for e in select(layout, target, table, filter)? {
            let mut te = layout.encode(&e);
            if filter.counter_data.is_some() && table.direct_counter_id.is_some() {
                if let Entry::Backend { backend_id, .. } = e {
                    match target.backend_counter(backend_id) {
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
    layout: &Layout,
    target: &dyn Target,
    filter: &CounterEntry,
    out: &mut Vec<Entity>,
) -> Result<(), Status> {
    let counters: Vec<CounterLayout> = if filter.counter_id == 0 {
        layout.counters.clone()
    } else {
        vec![layout.counter_by_id(filter.counter_id).ok_or_else(|| {
            Status::not_found(format!("unknown counter id {}", filter.counter_id))
        })?]
    };
    for c in counters {
        let cells = match &filter.index {
            Some(Index { index }) => {
                let i = u32::try_from(*index)
                    .ok()
                    .filter(|i| *i < c.size)
                    .ok_or_else(|| {
                        Status::out_of_range(format!("counter index {index} not in 0..{}", c.size))
                    })?;
                i..i + 1
            }
            None => 0..c.size,
        };
        for i in cells {
            let data = target.counter(c.counter, i).map_err(status)?;
            out.push(Entity {
                entity: Some(entity::Entity::CounterEntry(CounterEntry {
                    counter_id: c.id,
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

fn read_direct_counter(
    layout: &Layout,
    target: &dyn Target,
    filter: &DirectCounterEntry,
    out: &mut Vec<Entity>,
) -> Result<(), Status> {
    let backend = layout.table_of(crate::entry::TableKind::Backend);
    let te = filter.table_entry.clone().unwrap_or_default();
    if te.table_id != 0 && te.table_id != backend.id {
        return Err(Status::invalid_argument(format!(
            "table id {} has no direct counter",
            te.table_id
        )));
    }
    let te = TableEntry {
        table_id: backend.id,
        ..te
    };
    for e in select(layout, target, backend, &te)? {
        let Entry::Backend { backend_id, .. } = e else {
            continue;
        };
        let data = match target.backend_counter(backend_id) {
            Ok(p) => p,
            Err(TargetError::NotFound) => continue,
            Err(e) => return Err(status(e)),
        };
        out.push(Entity {
            entity: Some(entity::Entity::DirectCounterEntry(DirectCounterEntry {
                table_entry: Some(layout.encode(&e)),
                data: Some(counter_data(data)),
            })),
        });
    }
    Ok(())
}

/// Every entity the Read filters select, in ReadResponse chunks.
pub fn read(
    layout: &Layout,
    target: &dyn Target,
    filters: &[Entity],
) -> Result<Vec<ReadResponse>, Status> {
    let mut out = Vec::new();
    for f in filters {
        match &f.entity {
            Some(entity::Entity::TableEntry(te)) => read_table(layout, target, te, &mut out)?,
            Some(entity::Entity::CounterEntry(c)) => read_counter(layout, target, c, &mut out)?,
            Some(entity::Entity::DirectCounterEntry(d)) => {
                read_direct_counter(layout, target, d, &mut out)?
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
