//! petcd's native gRPC front end (`petcd._frontend`).
//!
//! The transport runs on tokio threads of its own and speaks HTTP/2 (the `h2` crate) and
//! gRPC framing only; it knows nothing of protobuf or etcd. Python takes the calls' events
//! in batches (`take`, woken by an eventfd) and answers with batches (`send`). See
//! src/petcd/_frontend.pyi for the interface and docs/enhancements/0004-transport.md for
//! why it exists.

pub mod authority;
pub mod conn;
pub mod grpc;
pub mod server;
pub mod shared;

#[cfg(feature = "python")]
mod py;
