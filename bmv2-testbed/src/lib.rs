//! The talaria pipeline on real bmv2 and on switch-agent, side by side.
//!
//! - [`netns`]: a switch namespace with ports `p1..pN` and a peer namespace
//!   with their veth ends `q1..qN`, IPv6 off and offloads off, removed on
//!   drop (panics included).
//! - [`packet`]: AF_PACKET sockets on the peer ends.
//! - [`switch`]: the switch under test, bmv2's `simple_switch_grpc` or the
//!   real `switch-agent` binary, run in the switch namespace and stopped by
//!   PID on drop; the p4c build of `p4/talaria.p4` that bmv2 runs.
//! - [`p4rt`]: a P4Runtime channel to a server listening on loopback
//!   inside a namespace, and the few calls the rig makes.
//! - [`rig`]: all of it together as a [`talaria_switch_dataplane::testing::scenarios::Rig`],
//!   so the switch-agent packet scenarios run through real ports.
//! - [`server`]: a P4Runtime server of any kind (bmv2, switch-agent, or
//!   switch-agent's server in process) for the P4Runtime parity tests.
//!
//! Everything here needs root; bmv2 also needs p4c and
//! `simple_switch_grpc` ([`talaria_preflight::P4Toolchain`]).

use std::io;

pub mod netns;
pub mod p4rt;
pub mod packet;
pub mod rig;
pub mod server;
pub mod switch;

pub use rig::Testbed;
pub use server::{P4rtServer, ServerKind};
pub use switch::{Pipeline, SwitchKind};

/// `nsenter`, which starts processes in a network namespace without the
/// private mount namespace `ip netns exec` adds (switch-agent's pins must
/// outlive it on the host's bpffs).
pub const NSENTER: talaria_preflight::Need = talaria_preflight::Need::Command {
    command: "nsenter",
    package: "util-linux",
};

/// What the testbed failed at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A helper command (`ip`, `ethtool`) failed.
    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },
    /// A system call failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// p4c or bmv2 is missing, or p4c refused the program.
    #[error("P4 toolchain: {0}")]
    Toolchain(String),
    /// The switch process did not come up.
    #[error("{switch}: {why}\n--- its output ---\n{log}")]
    Switch {
        switch: String,
        why: String,
        log: String,
    },
    /// A P4Runtime call failed.
    #[error("P4Runtime {what}: {status}")]
    P4Runtime {
        what: String,
        #[source]
        status: Box<tonic::Status>,
    },
    /// The gRPC channel could not be set up.
    #[error("gRPC channel to {addr}")]
    Channel {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// switch-agent's P4Runtime server could not start in process.
    #[error("starting switch-agent's P4Runtime server")]
    AgentServer(#[from] talaria_switch::server::StartError),
    /// The P4Info does not describe the talaria tables.
    #[error(transparent)]
    P4Info(#[from] talaria_tables::p4runtime::Mismatch),
    /// The switch answered, but not as a P4Runtime server should.
    #[error("{0}")]
    Protocol(String),
    /// Frames did not come back within the bound.
    #[error("{0}")]
    Timeout(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

pub(crate) fn p4rt_err(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> Error {
    let what = what.into();
    move |status| Error::P4Runtime {
        what,
        status: Box::new(status),
    }
}
