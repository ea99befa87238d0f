//! Roaming (policy 8.4 and 8.5): each mobile-broadband modem's registration, operator country,
//! home network, data bearers and bytes, read from ModemManager on the system bus; change
//! notifications so the agent reports a border crossing within seconds; and the abroad ledger,
//! the durable record of data used outside the home country per trip.
//!
//! How the daemon uses it:
//! 1. [`BusAddress::resolve`] the bus from the config's `system_bus` and the environment.
//! 2. [`watch()`] first, then [`collect`]: a change that lands between the two still wakes the
//!    watcher, so nothing is missed.
//! 3. After every collect, [`Ledger::observe`] the snapshot, persist the ledger (see
//!    [`ledger`] for the durability contract), and report [`Snapshot::state`].
//! 4. When the server acknowledges a report, [`Ledger::prune_acknowledged`] with the time of
//!    the observation that report carried.
//!
//! No ModemManager on the bus, or no modem, is a normal state: no modems and no error. An
//! unreachable bus or a failing ModemManager call is an error in [`Collected::errors`].
//!
//! Layout: [`mcc`] (the E.212 table), [`facts`] (pure mapping of D-Bus properties), `client`
//! (the zbus edge), [`mod@watch`] (change notifications), [`ledger`] (trips abroad).

use std::time::Duration;

use vakt_proto::model::{Modem, RoamingState, SectionKind};

use super::Collected;

mod client;
pub mod facts;
pub mod ledger;
pub mod mcc;
pub mod watch;

pub use ledger::{Ledger, LedgerError};
pub use watch::{Change, Watcher, watch};

pub use crate::bus::{BusAddress, DEFAULT_SYSTEM_BUS};

/// ModemManager's well-known bus name.
pub const MM_BUS_NAME: &str = "org.freedesktop.ModemManager1";
/// The object carrying ModemManager's ObjectManager; modems are found through it, never by a
/// guessed path prefix (the daemon uses `/Modem/N`, mocks use others).
pub const MM_PATH: &str = "/org/freedesktop/ModemManager1";
/// How long one collection may take before it gives up: a wedged ModemManager must not hold up
/// the report of every other section.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The mobile country codes that count as home. Empty means "each SIM's own MCC".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HomeMccs(Vec<String>);

impl HomeMccs {
    /// Validates a configured list (the policy's home list, e.g. `["240"]`).
    pub fn new<I, S>(list: I) -> Result<Self, RoamingError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for s in list {
            let s = s.as_ref().trim();
            if !mcc::is_mcc(s) {
                return Err(RoamingError::BadMcc(s.to_string()));
            }
            if !out.iter().any(|m| m == s) {
                out.push(s.to_string());
            }
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, mcc: &str) -> bool {
        self.0.iter().any(|m| m == mcc)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoamingError {
    #[error("cannot connect to the system bus at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("{what}: {source}")]
    Bus {
        what: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("{0:?} is not a mobile country code (three digits)")]
    BadMcc(String),
}

impl RoamingError {
    pub(crate) fn bus(what: impl Into<String>, source: zbus::Error) -> Self {
        Self::Bus {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// Where a modem is registered, as the abroad ledger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whereabouts {
    /// Registered on a network of a home MCC.
    Home,
    /// Registered on a network outside the home MCCs; `country` may be empty (a satellite or
    /// in-flight network) or several codes joined with `/` (a shared MCC).
    Abroad { mcc: String, country: String },
    /// Not registered (searching, idle, disabled, emergency only) or no usable operator code.
    Unknown,
}

/// Which byte counter of a bearer is read, so a reset can be told from growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counter {
    /// `total-rx-bytes`/`total-tx-bytes`: every connection of this bearer object.
    Total,
    /// `rx-bytes`/`tx-bytes` of the ongoing connection that started at `start_date` (seconds
    /// since the epoch, 0 when not published): zeroed on every reconnect.
    Ongoing { start_date: u64 },
}

/// One bearer (a data connection profile) of a modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerSnapshot {
    pub path: String,
    pub connected: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub counter: Counter,
}

/// One modem: what the report shows, plus what the ledger needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModemSnapshot {
    pub modem: Modem,
    pub whereabouts: Whereabouts,
    pub bearers: Vec<BearerSnapshot>,
}

/// Everything one collection saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// ModemManager's unique bus name (`:1.42`), `None` when it is not running. A new name means
    /// ModemManager restarted and every bearer object is new, whatever its path.
    pub manager: Option<String>,
    /// Sorted by modem id, so the report section's hash only changes when the facts do.
    pub modems: Vec<ModemSnapshot>,
}

impl Snapshot {
    /// The modems as the report shows them.
    pub fn modems(&self) -> Vec<Modem> {
        self.modems.iter().map(|m| m.modem.clone()).collect()
    }

    /// The report's `roaming` section: these modems plus the ledger's unacknowledged trips.
    pub fn state(&self, ledger: &Ledger) -> RoamingState {
        RoamingState {
            modems: self.modems(),
            abroad: ledger.abroad(),
        }
    }
}

/// Reads every modem ModemManager manages on `bus`. `home` decides what counts as abroad.
pub async fn collect(bus: &BusAddress, home: &HomeMccs) -> Collected<Snapshot> {
    let mut out = Collected::new(Snapshot::default());
    let reading = match tokio::time::timeout(COLLECT_TIMEOUT, client::read(bus)).await {
        Err(_) => {
            out.error(
                SectionKind::Roaming,
                MM_BUS_NAME,
                format!("no answer within {} s on {bus}", COLLECT_TIMEOUT.as_secs()),
            );
            return out;
        }
        Ok(Err(e)) => {
            let source = match &e {
                RoamingError::Connect { address, .. } => address.clone(),
                _ => MM_BUS_NAME.to_string(),
            };
            out.error(SectionKind::Roaming, source, e);
            return out;
        }
        Ok(Ok(reading)) => reading,
    };
    let mut problems = reading.problems;
    let mut modems: Vec<ModemSnapshot> = reading
        .modems
        .iter()
        .map(|raw| facts::modem_snapshot(raw, home, &mut problems))
        .collect();
    modems.sort_by(|a, b| a.modem.id.cmp(&b.modem.id));
    for p in problems {
        out.error(SectionKind::Roaming, p.path, p.message);
    }
    out.value = Snapshot {
        manager: reading.manager,
        modems,
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_address_resolution() {
        let cases = [
            (
                Some("unix:path=/tmp/a"),
                Some("unix:path=/tmp/b"),
                "unix:path=/tmp/a",
            ),
            (None, Some("unix:path=/tmp/b"), "unix:path=/tmp/b"),
            (Some("  "), Some(" unix:path=/tmp/b "), "unix:path=/tmp/b"),
            (None, Some(""), DEFAULT_SYSTEM_BUS),
            (None, None, DEFAULT_SYSTEM_BUS),
        ];
        for (config, env, want) in cases {
            assert_eq!(
                BusAddress::resolve(config, env).as_str(),
                want,
                "{config:?} {env:?}"
            );
        }
    }

    #[test]
    fn home_mccs_are_validated() {
        let home = HomeMccs::new(["240", " 240", "242"]).unwrap();
        assert!(home.contains("240") && home.contains("242") && !home.contains("244"));
        assert_eq!(home.0.len(), 2, "duplicates folded");
        assert!(HomeMccs::new(Vec::<String>::new()).unwrap().is_empty());
        for bad in ["24", "2400", "SE", ""] {
            let err = HomeMccs::new([bad]).unwrap_err();
            assert!(
                err.to_string().contains("not a mobile country code"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_bus_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/no-bus", dir.path().display());
        let out = collect(&BusAddress::new(&address), &HomeMccs::default()).await;
        assert!(out.value.modems.is_empty());
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert_eq!(out.errors[0].source, address);
        assert_eq!(out.errors[0].section, SectionKind::Roaming);
    }
}
