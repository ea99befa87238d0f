//! vakt-server: the control server and the library behind the `vakt` command line.
//!
//! Layers: `token`, `pki`, `timefmt`, `fsutil` (leaf helpers) → `store` (sled, protobuf
//! records) → `api` (gRPC services over a shared `State`) → `server` (`prepare` a data
//! directory, `run(listener, state, shutdown)`). The binaries in `src/bin` are the only place
//! that parses command lines, reads the environment or installs signal handlers.

pub mod api;
pub mod commands;
pub mod commit;
pub mod fsutil;
pub mod limit;
pub mod loss;
pub mod pki;
pub mod server;
pub mod store;
pub mod timefmt;
pub mod token;
