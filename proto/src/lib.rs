//! Vakt's schema: the generated protobuf types and services (`pb`), the small domain types the
//! collectors and the server's JSON speak (`model`), and the conversions between them.
//!
//! Generated code stays in `pb`; nothing outside this crate builds protobuf messages field by
//! field when a domain type exists, so a wire change is one edit here.

pub mod codec;
pub mod convert;
pub mod dial;
pub mod hash;
pub mod model;

/// Generated from `vakt/v1/*.proto`.
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]
pub mod pb {
    tonic::include_proto!("vakt.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vakt_descriptor");
}
