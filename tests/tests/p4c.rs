//! The real compiler: p4c (bmv2 backend, v1model) compiles `p4/talaria.p4`
//! with every warning an error, and the P4Info it writes is the checked-in
//! `p4/talaria.p4info.txtpb`, message for message. Needs p4c
//! (`talaria_preflight::P4Toolchain`): skipped without it, failed under
//! `CI=true`.

use talaria_preflight::{require, Need, P4Toolchain};
use talaria_tests::p4_dir;

#[test]
fn p4c_compiles_the_program_and_writes_the_checked_in_p4info() {
    require!([Need::P4Toolchain]);
    let toolchain = P4Toolchain::find().expect("found a moment ago");
    let out = std::env::temp_dir().join(format!("talaria-p4c-{}", std::process::id()));
    let build = toolchain.compile(&p4_dir().join("talaria.p4"), &out, &["--Werror"]);
    let read = |p: &std::path::Path| {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        talaria_p4rt::p4info::parse_text(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let result = build.map(|b| (read(&b.p4info), b.json.is_file()));
    let _ = std::fs::remove_dir_all(&out);
    let (compiled, has_json) = result.unwrap_or_else(|e| panic!("{e}"));
    println!("p4c ({toolchain}) compiled p4/talaria.p4 with --Werror");
    assert!(has_json, "p4c wrote no bmv2 JSON");
    let kept = read(&p4_dir().join("talaria.p4info.txtpb"));
    assert!(
        compiled == kept,
        "p4c's P4Info differs from p4/talaria.p4info.txtpb; regenerate it with\n  \
         p4c --target bmv2 --arch v1model --p4runtime-files p4/talaria.p4info.txtpb -o /tmp/talaria p4/talaria.p4\n\
         p4c wrote:\n{}",
        talaria_p4rt::p4info::to_text(&compiled)
    );
    println!("p4c's P4Info equals p4/talaria.p4info.txtpb");
}
