//! The two kinds of token: short-lived signed access tokens, and opaque
//! single-use refresh tokens.

pub mod access;
pub mod refresh;
