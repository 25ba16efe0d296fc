//! Integration tests: one binary, so one PostgreSQL server for all of them.

mod access;
mod brute_force;
mod chats;
mod contracts;
mod departures;
mod grpc_web;
mod history;
mod logs;
mod membership;
mod metrics;
mod nats;
mod quotas;
mod reflection;
mod rest;
mod revocation;
mod service_faults;
mod sessions;
mod smoke;
mod statuses;
mod stream_access;
mod stream_faults;
mod streams;
mod sweep;
mod tls;
mod traces;
mod users;
