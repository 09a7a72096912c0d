//! Integration tests: a real PostgreSQL cluster, pgward in-process, real clients.

mod admin_guard;
mod auth_tls;
mod cache;
mod cache_isolation;
mod cli;
mod console;
mod dashboard;
mod faults;
mod harness;
mod logs;
mod metrics;
mod packaging;
mod passthrough;
mod pgload;
mod reliability;
mod rules;
mod slow_log;
mod stats_http;
mod transparency;
