//! Integration tests: one binary, so one PostgreSQL server for all of them.

mod access;
mod chats;
mod logs;
mod metrics;
mod reflection;
mod rest;
mod sessions;
mod smoke;
mod streams;
mod users;
