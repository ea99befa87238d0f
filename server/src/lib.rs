//! vakt-server: the control server and the library behind the `vakt` command line.
//!
//! Layers: `config` (the service's TOML file), `token`, `pki`, `timefmt`, `fsutil` (leaf
//! helpers) → `store` (protobuf records over sled or PostgreSQL) → `state` (what the services share) → `findings`,
//! `notify`, `commands` → `api` (the gRPC services) →
//! `secrets` (a PostgreSQL replica's CA and signing keys sealed in the store), `migrate` (an
//! embedded installation copied into PostgreSQL) →
//! `server` (`prepare` a data directory, `run(listener, state, shutdown)`, and `run_console` for
//! the web console in `console`, which calls the same admin API). The binaries in `src/bin` are
//! the only place that parses command lines, reads the environment or installs signal handlers.
//!
//! The policy engine (`policy`) and the people register (`people`) are pure cores (no files,
//! sockets or clocks); `findings` and `notify` wrap them with the store and the outbox.

pub mod api;
pub mod certs;
pub mod commands;
pub mod commit;
pub mod config;
pub mod console;
pub mod findings;
pub mod fsutil;
pub mod hardening;
pub mod limit;
pub mod logwindow;
pub mod loss;
pub mod metrics;
pub mod metrics_access;
pub mod migrate;
pub mod notify;
pub mod people;
pub mod pki;
pub mod policy;
pub mod preauth;
pub mod readiness;
pub mod redact;
pub mod replicas;
pub mod secrets;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
#[cfg(test)]
mod testing;
pub mod timefmt;
pub mod tls;
pub mod token;
pub mod webhook;
