//! P4Runtime for talaria.
//!
//! - [`p4::v1`], [`p4::config::v1`], [`google::rpc`]: the P4Runtime v1,
//!   P4Info and google.rpc protos (written from the P4Runtime spec under
//!   `proto/`), as prost messages with tonic client and server code.
//! - [`p4info`]: loading a P4Info in text, binary or JSON form, and the
//!   [`p4info::Schema`] that resolves P4 names to ids and back.
//! - [`bytestring`]: the P4Runtime encoding of integers as byte strings.

pub mod bytestring;
mod error;
pub mod p4info;
mod reflect;

pub use error::{Error, Kind, Result};
pub use reflect::{descriptor_pool, FILE_DESCRIPTOR_SET};

/// Generated from the protos of package `p4.*`.
pub mod p4 {
    /// `p4.v1`: the P4Runtime service and its messages.
    #[allow(clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/p4.v1.rs"));
    }

    /// Generated from the protos of package `p4.config.*`.
    pub mod config {
        /// `p4.config.v1`: P4Info and the P4 type descriptions it uses.
        #[allow(clippy::all, clippy::pedantic)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/p4.config.v1.rs"));
        }
    }
}

/// Generated from the protos of package `google.*`.
pub mod google {
    /// `google.rpc`: `Status` and the canonical `Code`s.
    #[allow(clippy::all, clippy::pedantic)]
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}
