//! Builds the eBPF program (crate talaria-switch-ebpf, binary
//! talaria-switch-pipeline) for BPF with the nightly toolchain and
//! bpf-linker; the object lands in OUT_DIR and is embedded by src/lib.rs.

fn main() -> aya_build::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "talaria-switch-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
