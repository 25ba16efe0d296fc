//! The kinds of token: short-lived signed access tokens, opaque
//! single-use refresh tokens, and the one-time codes of two-factor login.

pub mod access;
pub mod refresh;
pub mod totp;
