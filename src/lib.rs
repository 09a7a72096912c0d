//! pgward: a PostgreSQL wire-protocol proxy that guards a database from its own queries.
//!
//! Applications connect to pgward instead of Postgres and notice nothing else. pgward relays
//! every message unchanged (one upstream connection per client, in session mode), fingerprints
//! each statement, and keeps per-fingerprint statistics that ops read over HTTP. Later layers
//! (time budgets, concurrency caps, rewrites, the result cache) plug into [`pipeline`].
//!
//! Module map, lower layers first (a module imports only from layers below it):
//!
//! | module | owns |
//! |---|---|
//! | [`protocol`] | wire format, sans IO: frames, startup packets, inspected messages, builders |
//! | [`units`] | "30s" / "64MiB" values in config files |
//! | [`fdlimit`] | the open-file limit raised at start, or the start refused |
//! | [`eventlog`] | repeated log events counted into one summary line per interval |
//! | [`fingerprint`] | normalization, stable 64-bit ids, statement kind, referenced tables |
//! | [`stats`] | per-fingerprint counters and latency histograms, snapshots, Prometheus text |
//! | [`sessions`] | the registry of client sessions ops list (`/sessions`, `SHOW SESSIONS`) and end |
//! | [`net`] | the plain-or-TLS byte stream under each leg |
//! | [`upstream`] | connecting to Postgres (TCP, TLS) and cancelling its queries |
//! | [`auth`] | client authentication by pgward: users file, `auth_query`, SCRAM-SHA-256 / md5 server side |
//! | [`pool`] | transaction mode's server connections: pgward's own login, pools per (database, user), their stats |
//! | [`rules`] | rules.toml: schema, validation with every problem, evaluation, rewrites |
//! | [`cache`] | the result cache: entries, single flight, invalidation epochs, per-session keys |
//! | [`limits`] | concurrency slots and database-time budgets of rules and shared limits |
//! | [`protect`] | protected traffic's objectives; the controller lowering the other limits |
//! | [`reload`] | the rules in force (ArcSwap), their limits, hot reload |
//! | [`pipeline`] | the per-statement phases: fingerprint -> rules -> cache -> cap/budget -> record |
//! | [`console`] | the admin console: the `pgward` database answered by pgward itself |
//! | [`server`] | listener, startup/TLS handshake, the session relay, cancel-key mapping |
//! | [`admin`] | HTTP: `/stats/queries`, `/metrics`, `/rules`, `/cache`, `/sessions`, `/pools`, `/healthz`, the dashboard page `/` |
//! | [`config`], [`app`], [`error`] | config loading, the shared handles, top-level errors |
//! | [`check`], [`healthcheck`] | `pgward check`: the config, its TLS files and the rules file, loaded without starting; `pgward healthcheck`: probe a running instance |
//!
//! See `docs/architecture.md` for the path of one query.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod check;
pub mod config;
pub mod console;
pub mod error;
pub mod eventlog;
pub mod fdlimit;
pub mod fingerprint;
pub mod healthcheck;
pub mod limits;
pub mod net;
pub mod pipeline;
pub mod pool;
pub mod protect;
pub mod protocol;
pub mod reload;
pub mod rules;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod stats;
pub mod units;
pub mod upstream;

pub use app::{App, Running, start};
pub use config::Config;
pub use error::Error;
