//! Fault tests that need a process or a server of their own: `kill -9` of
//! the real service binaries, and PostgreSQL really stopped under load.
//! One binary apart from `api`, so its servers come and go without
//! disturbing those tests. Each test is bounded in time and count.

mod kills;
mod postgres_outage;
