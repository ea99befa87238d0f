//! vakt-agent: collects what the policy needs on a laptop and talks to the server.
//!
//! Layers, from the inside out: `collect` (pure parsers plus thin probes reading under a root),
//! `report` (sections and their hashes), `link` (gRPC client, enrollment, spool), `daemon`
//! (the run loop). Inner layers never reach outward.

pub mod collect;
