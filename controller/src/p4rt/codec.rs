//! Typed [`Entry`] ↔ P4Runtime `TableEntry`, with every table, field,
//! action and parameter id resolved once from the P4Info by name.

use std::{collections::BTreeMap, net::Ipv4Addr};

use talaria_p4rt::{
    bytestring,
    p4::{config::v1::P4Info, v1},
    p4info::Schema,
};

use crate::{
    state::{Entry, Table},
    types::{Backend, HashMode, Ipv4Prefix, Mac, Proto, RouteAction, ServiceAction, ServiceKey},
};

/// Errors turning entries into P4Runtime messages and back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The P4Info lacks a name the controller needs.
    #[error("P4Info does not fit the controller")]
    Schema(#[source] talaria_p4rt::Error),
    /// A value does not fit its field.
    #[error("{what}: bad bytestring")]
    Bytes {
        /// Field.
        what: &'static str,
        /// Cause.
        #[source]
        source: talaria_p4rt::Error,
    },
    /// A read-back entry has an unexpected shape.
    #[error("unexpected entry in {table}: {detail}")]
    Shape {
        /// Table name.
        table: String,
        /// What was wrong.
        detail: String,
    },
}

type Result<T, E = CodecError> = std::result::Result<T, E>;

/// (param id, bit width) pairs of an action, in order.
type ParamIds = Vec<(u32, u32)>;

/// One table's layout: key field names, and actions with their params.
type TableLayout = (
    Table,
    &'static [&'static str],
    &'static [(&'static str, &'static [&'static str])],
);

/// Ids of one table and its entry action.
#[derive(Debug, Clone)]
struct TableIds {
    id: u32,
    /// Key field ids in key order, with bit widths.
    fields: Vec<(u32, u32)>,
    /// Action ids by short name, with param (id, width) in order.
    actions: BTreeMap<&'static str, (u32, ParamIds)>,
}

/// Encoder/decoder for the controller's tables.
#[derive(Debug, Clone)]
pub struct Codec {
    tables: BTreeMap<Table, TableIds>,
    by_id: BTreeMap<u32, Table>,
    /// Counter name → id, for counter reads.
    pub counters: BTreeMap<String, (u32, i64)>,
}

/// (table, key fields, actions with their params).
const LAYOUT: &[TableLayout] = &[
    (
        Table::Ipv4Route,
        &["dst_addr"],
        &[("forward", &["port", "src_mac", "dst_mac"]), ("drop", &[])],
    ),
    (
        Table::SwitchAddr,
        &["dst_addr"],
        &[("terminate_tunnel", &[])],
    ),
    (
        Table::PodNode,
        &["pod_addr"],
        &[("set_client_node", &["node_ip"])],
    ),
    (
        Table::Backend,
        &["backend_id"],
        &[("set_backend", &["backend_ip", "backend_port", "node_ip"])],
    ),
    (
        Table::CookieCheck,
        &["service_id", "backend_id"],
        &[("cookie_valid", &[])],
    ),
    (
        Table::LbBucket,
        &["service_id", "bucket"],
        &[("select_backend", &["backend_id"])],
    ),
    (
        Table::ServiceV4,
        &["vip", "port", "proto"],
        &[("set_service", &["service_id", "bucket_mask", "hash_mode"])],
    ),
];

fn enc(what: &'static str, v: u128, width: u32) -> Result<Vec<u8>> {
    bytestring::encode(v, width).map_err(|source| CodecError::Bytes { what, source })
}

fn dec(what: &'static str, b: &[u8], width: u32) -> Result<u128> {
    bytestring::decode(b, width).map_err(|source| CodecError::Bytes { what, source })
}

impl Codec {
    /// Resolves every id from `p4info`.
    pub fn new(p4info: &P4Info) -> Result<Self> {
        let schema = Schema::new(p4info).map_err(CodecError::Schema)?;
        let mut tables = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (t, keys, actions) in LAYOUT {
            let pt = schema.table(t.p4_name()).map_err(CodecError::Schema)?;
            let mut fields = Vec::new();
            for k in *keys {
                let f = pt.match_field(k).map_err(CodecError::Schema)?;
                fields.push((f.id, f.bitwidth));
            }
            let mut acts = BTreeMap::new();
            for (a, params) in *actions {
                let full = format!("TalariaIngress.{a}");
                let pa = schema.action(&full).map_err(CodecError::Schema)?;
                let mut ps = Vec::new();
                for p in *params {
                    let pp = pa.param(p).map_err(CodecError::Schema)?;
                    ps.push((pp.id, pp.bitwidth));
                }
                acts.insert(*a, (pa.id, ps));
            }
            tables.insert(
                *t,
                TableIds {
                    id: pt.id,
                    fields,
                    actions: acts,
                },
            );
            by_id.insert(pt.id, *t);
        }
        let counters = schema
            .counters()
            .iter()
            .map(|c| (c.name.clone(), (c.id, c.size)))
            .collect();
        Ok(Self {
            tables,
            by_id,
            counters,
        })
    }

    /// The P4Info id of `t`.
    pub fn table_id(&self, t: Table) -> u32 {
        self.tables[&t].id
    }

    /// The table with P4Info id `id`, if the controller owns it.
    pub fn table_of(&self, id: u32) -> Option<Table> {
        self.by_id.get(&id).copied()
    }

    fn exact(&self, t: Table, i: usize, what: &'static str, v: u128) -> Result<v1::FieldMatch> {
        let (fid, w) = self.tables[&t].fields[i];
        Ok(v1::FieldMatch {
            field_id: fid,
            field_match_type: Some(v1::field_match::FieldMatchType::Exact(
                v1::field_match::Exact {
                    value: enc(what, v, w)?,
                },
            )),
        })
    }

    fn lpm(&self, t: Table, p: Ipv4Prefix) -> Result<Vec<v1::FieldMatch>> {
        if p.len == 0 {
            // P4Runtime: a /0 LPM is expressed by omitting the field.
            return Ok(Vec::new());
        }
        let (fid, w) = self.tables[&t].fields[0];
        Ok(vec![v1::FieldMatch {
            field_id: fid,
            field_match_type: Some(v1::field_match::FieldMatchType::Lpm(v1::field_match::Lpm {
                value: enc("prefix", u128::from(u32::from(p.addr)), w)?,
                prefix_len: i32::from(p.len),
            })),
        }])
    }

    fn action(&self, t: Table, name: &'static str, values: &[u128]) -> Result<v1::TableAction> {
        let (aid, params) = &self.tables[&t].actions[name];
        let params = params
            .iter()
            .zip(values)
            .map(|((pid, w), v)| {
                Ok(v1::action::Param {
                    param_id: *pid,
                    value: enc(name, *v, *w)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(v1::TableAction {
            r#type: Some(v1::table_action::Type::Action(v1::Action {
                action_id: *aid,
                params,
            })),
        })
    }

    /// `e` as a P4Runtime table entry. `with_action` false leaves the action
    /// out (deletes match on the key only).
    pub fn encode(&self, e: &Entry, with_action: bool) -> Result<v1::TableEntry> {
        let t = e.table();
        let ip = |a: Ipv4Addr| u128::from(u32::from(a));
        let (matches, action) = match *e {
            Entry::Ipv4Route { prefix, action } => (
                self.lpm(t, prefix)?,
                match action {
                    RouteAction::Forward {
                        port,
                        src_mac,
                        dst_mac,
                    } => self.action(
                        t,
                        "forward",
                        &[u128::from(port), mac_value(src_mac), mac_value(dst_mac)],
                    )?,
                    RouteAction::Drop => self.action(t, "drop", &[])?,
                },
            ),
            Entry::SwitchAddr { addr } => (
                vec![self.exact(t, 0, "dst_addr", ip(addr))?],
                self.action(t, "terminate_tunnel", &[])?,
            ),
            Entry::PodNode { prefix, node_ip } => (
                self.lpm(t, prefix)?,
                self.action(t, "set_client_node", &[ip(node_ip)])?,
            ),
            Entry::Backend {
                backend_id,
                backend,
            } => (
                vec![self.exact(t, 0, "backend_id", u128::from(backend_id))?],
                self.action(
                    t,
                    "set_backend",
                    &[
                        ip(backend.ip),
                        u128::from(backend.port),
                        ip(backend.node_ip),
                    ],
                )?,
            ),
            Entry::CookieCheck {
                service_id,
                backend_id,
            } => (
                vec![
                    self.exact(t, 0, "service_id", u128::from(service_id))?,
                    self.exact(t, 1, "backend_id", u128::from(backend_id))?,
                ],
                self.action(t, "cookie_valid", &[])?,
            ),
            Entry::LbBucket {
                service_id,
                bucket,
                backend_id,
            } => (
                vec![
                    self.exact(t, 0, "service_id", u128::from(service_id))?,
                    self.exact(t, 1, "bucket", u128::from(bucket))?,
                ],
                self.action(t, "select_backend", &[u128::from(backend_id)])?,
            ),
            Entry::ServiceV4 { key, action } => (
                vec![
                    self.exact(t, 0, "vip", ip(key.vip))?,
                    self.exact(t, 1, "port", u128::from(key.port))?,
                    self.exact(t, 2, "proto", u128::from(key.proto.number()))?,
                ],
                self.action(
                    t,
                    "set_service",
                    &[
                        u128::from(action.service_id),
                        u128::from(action.bucket_mask),
                        u128::from(action.hash_mode.value()),
                    ],
                )?,
            ),
        };
        Ok(v1::TableEntry {
            table_id: self.table_id(t),
            r#match: matches,
            action: with_action.then_some(action),
            ..Default::default()
        })
    }

    /// A read-back table entry as a typed [`Entry`].
    pub fn decode(&self, te: &v1::TableEntry) -> Result<Entry> {
        let t = self
            .table_of(te.table_id)
            .ok_or_else(|| CodecError::Shape {
                table: format!("id {}", te.table_id),
                detail: "table not owned by the controller".into(),
            })?;
        let ids = &self.tables[&t];
        let shape = |d: String| CodecError::Shape {
            table: t.to_string(),
            detail: d,
        };
        // Key values in key order; LPM gives (value, len); absent = wildcard.
        let mut exact: Vec<Option<u128>> = vec![None; ids.fields.len()];
        let mut lpm: Option<(u128, u8)> = None;
        for m in &te.r#match {
            let Some(i) = ids.fields.iter().position(|(f, _)| *f == m.field_id) else {
                return Err(shape(format!("unknown field id {}", m.field_id)));
            };
            let w = ids.fields[i].1;
            match &m.field_match_type {
                Some(v1::field_match::FieldMatchType::Exact(x)) => {
                    exact[i] = Some(dec("key", &x.value, w)?)
                }
                Some(v1::field_match::FieldMatchType::Lpm(x)) => {
                    let len =
                        u8::try_from(x.prefix_len).map_err(|_| shape("bad prefix_len".into()))?;
                    lpm = Some((dec("key", &x.value, w)?, len));
                }
                _ => return Err(shape("unsupported match kind".into())),
            }
        }
        let key = |i: usize| exact[i].ok_or_else(|| shape(format!("missing key field {i}")));
        let (aid, params) = match te.action.as_ref().and_then(|a| a.r#type.as_ref()) {
            Some(v1::table_action::Type::Action(a)) => (a.action_id, &a.params),
            _ => return Err(shape("no direct action".into())),
        };
        let Some((aname, pspec)) = ids
            .actions
            .iter()
            .find(|(_, (id, _))| *id == aid)
            .map(|(n, (_, p))| (*n, p))
        else {
            return Err(shape(format!("unexpected action id {aid}")));
        };
        let mut pv = Vec::new();
        for (pid, w) in pspec {
            let p = params
                .iter()
                .find(|p| p.param_id == *pid)
                .ok_or_else(|| shape(format!("{aname}: missing param {pid}")))?;
            pv.push(dec("param", &p.value, *w)?);
        }
        let ip4 = |v: u128| Ipv4Addr::from(v as u32);
        let prefix = || -> Result<Ipv4Prefix> {
            let (v, len) = lpm.unwrap_or((0, 0));
            Ipv4Prefix::new(ip4(v), len).ok_or_else(|| shape("prefix_len > 32".into()))
        };
        Ok(match t {
            Table::Ipv4Route => Entry::Ipv4Route {
                prefix: prefix()?,
                action: if aname == "forward" {
                    RouteAction::Forward {
                        port: pv[0] as u16,
                        src_mac: mac_of(pv[1]),
                        dst_mac: mac_of(pv[2]),
                    }
                } else {
                    RouteAction::Drop
                },
            },
            Table::SwitchAddr => Entry::SwitchAddr { addr: ip4(key(0)?) },
            Table::PodNode => Entry::PodNode {
                prefix: prefix()?,
                node_ip: ip4(pv[0]),
            },
            Table::Backend => Entry::Backend {
                backend_id: key(0)? as u32,
                backend: Backend {
                    ip: ip4(pv[0]),
                    port: pv[1] as u16,
                    node_ip: ip4(pv[2]),
                },
            },
            Table::CookieCheck => Entry::CookieCheck {
                service_id: key(0)? as u16,
                backend_id: key(1)? as u32,
            },
            Table::LbBucket => Entry::LbBucket {
                service_id: key(0)? as u16,
                bucket: key(1)? as u16,
                backend_id: pv[0] as u32,
            },
            Table::ServiceV4 => Entry::ServiceV4 {
                key: ServiceKey {
                    vip: ip4(key(0)?),
                    port: key(1)? as u16,
                    proto: Proto::from_number(key(2)? as u8)
                        .ok_or_else(|| shape(format!("protocol {}", key(2).unwrap_or(0))))?,
                },
                action: ServiceAction {
                    service_id: pv[0] as u16,
                    bucket_mask: pv[1] as u16,
                    hash_mode: HashMode::from_value(pv[2] as u8)
                        .ok_or_else(|| shape(format!("hash_mode {}", pv[2])))?,
                },
            },
        })
    }
}

fn mac_value(m: Mac) -> u128 {
    let mut b = [0u8; 16];
    b[10..].copy_from_slice(&m.0);
    u128::from_be_bytes(b)
}

fn mac_of(v: u128) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&v.to_be_bytes()[10..]);
    Mac(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn codec() -> Codec {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../p4/talaria.p4info.txtpb");
        let info = talaria_p4rt::p4info::load(p).unwrap();
        Codec::new(&info).unwrap()
    }

    #[test]
    fn roundtrip_every_table() {
        let c = codec();
        let entries = [
            Entry::Ipv4Route {
                prefix: "192.168.0.0/24".parse().unwrap(),
                action: RouteAction::Forward {
                    port: 3,
                    src_mac: "02:00:00:00:00:01".parse().unwrap(),
                    dst_mac: "02:00:00:00:00:02".parse().unwrap(),
                },
            },
            Entry::Ipv4Route {
                prefix: "0.0.0.0/0".parse().unwrap(),
                action: RouteAction::Drop,
            },
            Entry::SwitchAddr {
                addr: [192, 168, 0, 1].into(),
            },
            Entry::PodNode {
                prefix: "10.244.1.0/24".parse().unwrap(),
                node_ip: [192, 168, 0, 11].into(),
            },
            Entry::Backend {
                backend_id: 0xdead_beef,
                backend: Backend {
                    ip: [10, 244, 1, 5].into(),
                    port: 8080,
                    node_ip: [192, 168, 0, 11].into(),
                },
            },
            Entry::CookieCheck {
                service_id: 7,
                backend_id: 9,
            },
            Entry::LbBucket {
                service_id: 7,
                bucket: 0,
                backend_id: 9,
            },
            Entry::ServiceV4 {
                key: ServiceKey {
                    vip: [10, 96, 0, 10].into(),
                    port: 53,
                    proto: Proto::Udp,
                },
                action: ServiceAction {
                    service_id: 7,
                    bucket_mask: 255,
                    hash_mode: HashMode::ClientIp,
                },
            },
        ];
        for e in entries {
            let te = c.encode(&e, true).unwrap();
            assert_eq!(c.decode(&te).unwrap(), e, "{te:?}");
        }
        // bit<9> port.
        let bad = Entry::Ipv4Route {
            prefix: "10.0.0.0/8".parse().unwrap(),
            action: RouteAction::Forward {
                port: 600,
                src_mac: Mac::default(),
                dst_mac: Mac::default(),
            },
        };
        assert!(c.encode(&bad, true).is_err());
    }
}
