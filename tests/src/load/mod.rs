//! The fleet simulator behind `vakt-loadgen`, also used by the crash tests: simulated agents
//! that enroll for real (each its own key, CSR and certificate), each over its own TLS
//! connection, report with the agent's own delta bookkeeping (`vakt_agent::link`), hold a
//! Connect stream and answer signed commands after verifying them with the pinned key
//! (`vakt_agent::act::verify`).
//!
//! - `sim`: one simulated agent and the fleet-wide counters.
//! - `failover`: which server a simulated agent turns to when its own fails (pure).
//! - `inventory`: the reports the simulated agents send (a 2,000-package inventory).
//! - `reports`: simulated agents reporting without pause, counting acknowledgements
//!   (the crash and PostgreSQL restart tests).
//! - `admin`: the admin API client (bearer token) for tokens, loss reports and checks.
//! - `baseline`: a bare tonic echo service on the server's own TLS set-up, the yardstick.
//! - `stats`: percentiles and /proc readings.

pub mod admin;
pub mod baseline;
pub mod failover;
pub mod inventory;
pub mod reports;
pub mod sim;
pub mod stats;

/// Why a simulated agent or a phase failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Link(#[from] vakt_agent::link::LinkError),
    #[error("{what}: {status}")]
    Rpc {
        what: &'static str,
        status: tonic::Status,
    },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("{0}")]
    Other(String),
}

impl LoadError {
    pub fn rpc(what: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Rpc { what, status }
    }
}

/// The address the `i`-th connection dials from: spread over `n` loopback addresses when the
/// server is on loopback, so tens of thousands of connections (and their TIME_WAIT leftovers
/// after a restart) never run out of source ports. `None` (the kernel's choice) otherwise.
pub fn source_addr(server: &str, i: usize, n: usize) -> Option<std::net::IpAddr> {
    let host = server
        .strip_prefix("https://")?
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback());
    if !loopback || n == 0 {
        return None;
    }
    let last = u8::try_from(1 + i % n.min(250)).unwrap_or(1);
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127, 0, 0, last,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_only_on_loopback() {
        let a = source_addr("https://127.0.0.1:7443", 9, 8);
        assert_eq!(a, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(
            source_addr("https://localhost:7443", 0, 8),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(source_addr("https://vakt.example.org:7443", 3, 8), None);
        assert_eq!(source_addr("https://127.0.0.1:7443", 3, 0), None);
    }
}
