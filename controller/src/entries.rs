//! What the diff and the planner share about the tables: the order they
//! are written in, and the view of a switch's tables as key-ordered entry
//! streams, which both the desired state and a read-back switch provide.

use talaria_tables::{cookie_check, Contents, Entry, EntryKey, Table};

/// Every table the controller writes, in insert order: referenced before
/// referencing.
/// IPv6 Services' tables sit with their IPv4 twins: `pod_node_v6` with
/// `pod_node`, `backend_v6` with `backend` (before the `cookie_check` and
/// `lb_bucket` entries that name its ids), `service_v6` with `service_v4`
/// (after the buckets it points at).
pub const INSERT_ORDER: [Table; 16] = [
    Table::Ipv4Route,
    Table::Ipv6Route,
    Table::SpoofedSource,
    Table::TunnelPeer,
    Table::SwitchAddr,
    Table::PodNode,
    Table::PodNodeV6,
    Table::TunnelSource,
    Table::Backend,
    Table::BackendV6,
    Table::EndpointReply,
    Table::CookieCheck,
    Table::TsCookie,
    Table::LbBucket,
    Table::ServiceV4,
    Table::ServiceV6,
];

/// Switch tables as key-ordered entry streams: what a diff merges.
pub trait Tables {
    /// The entries of `table` in key order, after `after` (all for `None`).
    fn entries_after<'a>(
        &'a self,
        table: Table,
        after: Option<&EntryKey>,
    ) -> Box<dyn Iterator<Item = Entry> + 'a>;
}

impl Tables for Contents {
    fn entries_after<'a>(
        &'a self,
        table: Table,
        after: Option<&EntryKey>,
    ) -> Box<dyn Iterator<Item = Entry> + 'a> {
        Contents::entries_after(self, table, after)
    }
}

/// The `cookie_check` entry letting cookies of service `service_id` name
/// `backend_id`.
pub fn cookie_entry(service_id: u16, backend_id: u32) -> Entry {
    cookie_check::Entry {
        key: cookie_check::Key {
            service_id,
            backend_id,
        },
        action: cookie_check::Action::CookieValid {},
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table is written, once.
    #[test]
    fn insert_order_names_every_table_once() {
        let mut order = INSERT_ORDER.to_vec();
        order.sort();
        order.dedup();
        let mut all = Table::ALL.to_vec();
        all.sort();
        assert_eq!(order, all);
    }
}
