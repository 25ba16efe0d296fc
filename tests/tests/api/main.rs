//! Integration tests: one binary, so one PostgreSQL server for all of them.

mod access;
mod reflection;
mod sessions;
mod smoke;
mod users;
