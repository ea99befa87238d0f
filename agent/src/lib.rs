//! vakt-agent: collects what the policy needs on a laptop and talks to the server.
//!
//! Layers, from the inside out: `collect` (pure parsers plus thin probes reading under a
//! root), `state` (the state directory), `link` (gRPC client: enrollment, reports with section
//! deltas), `daemon` (the run loop). Inner layers never reach outward: collectors know nothing
//! of the network, the link nothing of how facts are gathered.

pub mod act;
pub mod atomic;
pub mod backoff;
pub mod bus;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod link;
pub mod renew;
pub mod state;
