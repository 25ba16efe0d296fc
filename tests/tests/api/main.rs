//! Integration tests: one binary, so one PostgreSQL server for all of them.

mod smoke;
