//! Dumps name every field from the P4Info and show values in their
//! formats; and a definition with 128-bit fields works like any other.

use talaria_p4rt::p4info::{self, Schema};
use talaria_tables::dump::{dump_entry, table_dump};
use talaria_tables::p4runtime::{encode, encode_default};
use talaria_tables::value::{Mac, Value};
use talaria_tables::{ipv4_route, Entry, FieldValue, Table};

#[test]
fn dumps_use_p4info_names_and_value_formats() {
    let info = p4info::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../p4/talaria.p4info.txtpb"
    ))
    .unwrap();
    let schema = Schema::new(&info).unwrap();
    let e = Entry::from(ipv4_route::Entry {
        key: ipv4_route::Key {
            dst_addr: "10.244.2.0/24".parse().unwrap(),
        },
        action: ipv4_route::Action::Forward {
            port: 2,
            src_mac: "02:00:00:00:00:01".parse::<Mac>().unwrap(),
            dst_mac: "02:00:00:00:00:02".parse::<Mac>().unwrap(),
        },
    });
    let d = dump_entry(&schema, &encode(&e)).unwrap();
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        serde_json::json!({
            "match": {"dst_addr": "10.244.2.0/24"},
            "action": "forward",
            "params": {"port": 2, "src_mac": "02:00:00:00:00:01", "dst_mac": "02:00:00:00:00:02"},
        })
    );
    let d = dump_entry(&schema, &encode_default(Table::ServiceV4)).unwrap();
    assert_eq!((d.action.as_str(), d.is_default), ("service_miss", true));
    let header = table_dump(schema.table("TalariaIngress.service_v4").unwrap());
    assert_eq!(header.key, ["vip", "port", "proto"]);
    assert_eq!(header.size, 65536);
}

mod wide {
    use std::net::Ipv6Addr;

    talaria_tables::p4_tables! {
        control "Wide";
        /// A table with 128-bit key and parameter.
        table Route6 in route6 = "route6", 0x0200_0001 {
            size 16;
            key { dst_addr: lpm Ipv6Addr = 128, vrf: exact u16 = 12 }
            actions {
                Via = "via", 0x0100_0001 { next_hop: Ipv6Addr = 128, cookie: u128 = 100 },
            }
            default_only { Miss = "miss", 0x0100_0002 }
            default Miss;
            direct_counter None;
        }
    }
}

#[test]
fn fields_of_128_bits_are_defined_like_any_other() {
    use wide::route6;
    let e = route6::Entry {
        key: route6::Key {
            dst_addr: "fd00:10:244:2::/64".parse().unwrap(),
            vrf: 7,
        },
        action: route6::Action::Via {
            next_hop: "fd00::1".parse().unwrap(),
            cookie: 1 << 99,
        },
    };
    let values = e.key.values();
    assert_eq!(
        values[0],
        FieldValue {
            value: "fd00:10:244:2::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .to_u128(),
            prefix_len: Some(64)
        }
    );
    assert_eq!(route6::Key::from_values(&values), Some(e.key));
    let p = e.action.params();
    assert_eq!(
        route6::Action::from_params(e.action.def().id, &p),
        Some(e.action)
    );
    assert_eq!(route6::DEF.fields[0].bits, 128);
    assert_eq!(wide::Table::Route6.name(), "Wide.route6");
    let mut c = wide::Contents::default();
    assert_eq!(c.insert(e.into()), None);
    assert_eq!(
        c.get(&wide::EntryKey::Route6(e.key)),
        Some(wide::Entry::Route6(e))
    );
}
