//! Integration tests: a real PostgreSQL cluster, pgward in-process, real clients.

mod admin_guard;
mod auth_tls;
mod cache;
mod cache_isolation;
mod cli;
mod client_auth;
mod console;
mod dashboard;
mod faults;
mod harness;
mod limits;
mod logs;
mod metrics;
mod packaging;
mod passthrough;
mod pgload;
mod pool;
mod protect;
mod reliability;
mod rules;
mod slow_log;
mod statements;
mod stats_http;
mod transaction_mode;
mod transparency;
