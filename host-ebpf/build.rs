//! Builds the TC programs (crate `talaria-node-ebpf`) for the BPF target
//! with the nightly toolchain and bpf-linker; the agent embeds the object.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "talaria-node-ebpf",
            root_dir: dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
