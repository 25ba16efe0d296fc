//! Rust for the contracts in `proto/`, written by `buf generate`: messages
//! that validate their own `validate.rules`, tonic clients and servers, and
//! each package's `FILE_DESCRIPTOR_SET` for server reflection.
//!
//! Nothing here is edited by hand: change the protos and regenerate. One
//! feature per package (`auth-v1`, `chat-v1`) keeps each service to the
//! contracts it uses.
include!("protos.rs");
