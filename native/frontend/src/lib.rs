//! petcd's native gRPC front end (`petcd._frontend`).
//!
//! The transport runs on tokio threads of its own and speaks HTTP/2 (the `h2` crate), TLS
//! on https listeners (`rustls`, src/tls.rs) and gRPC framing only; it knows nothing of
//! protobuf or etcd. Python takes the calls' events in batches (`take`, woken by an
//! eventfd) and answers with batches (`send`). See
//! src/petcd/_frontend.pyi for the interface and docs/enhancements/0004-transport.md for
//! why it exists.
//!
//! One function apart from the transport: `kv::range_response`, the encoder of etcd's
//! RangeResponse from petcd's stored records, called by the KV service on the event loop
//! (docs/enhancements/0006-range-encoding.md). And one decoder: `decode`, etcd's write
//! requests read from their bytes for the member's request dataclasses (`pydecode`,
//! docs/enhancements/0008-request-decoding.md).

pub mod authority;
pub mod conn;
pub mod decode;
pub mod grpc;
pub mod kv;
pub mod server;
pub mod shared;
pub mod tls;

#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
mod pydecode;
