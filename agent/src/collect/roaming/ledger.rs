//! The abroad ledger: per trip abroad (entered, left, country, MCC), the bytes the modems carried
//! while registered outside the home MCCs, kept until the server has acknowledged the closed trip.
//!
//! A pure state machine: [`Ledger::observe`] takes a [`Snapshot`] and the time, and nothing else.
//!
//! **Trips.** A trip is keyed by the foreign MCC. It opens at the first observation of a modem
//! registered on that MCC and stays open while observations keep seeing it. It closes
//! - when a modem is seen registered at home, or on another foreign MCC and none on this one
//!   (crossing into a third country opens a new trip), or
//! - when no modem has been registered anywhere (no modem, searching, disabled) for longer than
//!   [`GAP_MS`]: a tunnel or a suspended laptop does not end a trip, a laptop carried home with
//!   its modem off does, eventually.
//!
//! `left_ms` is the last time the trip was seen, not the time it was closed.
//!
//! **Bytes.** Bearer counters are followed at every observation, at home too, and the growth since
//! the previous observation is added to the trip of the MCC the modem is registered on *now*.
//! A counter can restart: the ongoing-connection counters are zeroed by every reconnect (the
//! bearer's `start-date` changes, or the value drops), and every bearer is a new object after
//! ModemManager restarts ([`Snapshot::manager`] changes), whatever its path. A restarted counter
//! counts from zero. A bearer that appears on a modem seen before counts in full (it connected
//! since the last look); the bearers of a modem seen for the first time only set the baseline,
//! since nobody knows where their bytes were used. Bytes used between the last observation and
//! a counter reset are lost; observing on every change notification keeps that window small.
//!
//! **Durability.** The daemon must persist the ledger ([`Ledger::to_bytes`]) after every
//! `observe` that returns `true`, and before it reports: write to a temporary file in the state
//! directory, fsync it, rename it over the old file, fsync the directory. Trips and counter
//! baselines live in the one file, so whatever state survives a crash is self-consistent: a
//! stale baseline only means the bytes since it are counted once at the next observation, never
//! twice. A file that fails [`Ledger::from_bytes`] should be kept aside (renamed) and reported,
//! not silently replaced.
//!
//! **Acknowledgement.** [`Ledger::abroad`] lists every open trip and every closed one not yet
//! acknowledged. When the server acknowledges a report, call [`Ledger::prune_acknowledged`] with
//! the `now_ms` of the `observe` whose ledger that report carried: closed trips closed by then
//! were in it and are dropped. Open trips stay.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vakt_proto::model::AbroadPeriod;

use super::{Counter, Snapshot, Whereabouts};

/// How long no registration at all may last before an open trip is closed.
pub const GAP_MS: i64 = 60 * 60 * 1000;
/// Closed, unacknowledged trips kept at most; the oldest go first. Months offline at one border
/// crossing a day stay far below it.
pub const MAX_CLOSED_TRIPS: usize = 512;
/// Modems remembered (for "seen before"), the least recently seen forgotten first.
const MAX_MODEMS: usize = 16;
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the abroad ledger is not valid: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode the abroad ledger: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("the abroad ledger has version {0}; this agent reads version {VERSION}")]
    Version(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Trip {
    mcc: String,
    country: String,
    entered_ms: i64,
    /// The last observation that saw the trip.
    last_seen_ms: i64,
    /// The observation that closed it; `None` while abroad.
    closed_at_ms: Option<i64>,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// What a bearer's counters were at the last observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Baseline {
    /// ModemManager's unique name then: a new one means a new bearer object.
    manager: String,
    counter: Counter,
    rx_bytes: u64,
    tx_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ModemCounters {
    last_seen_ms: i64,
    /// By bearer object path.
    bearers: BTreeMap<String, Baseline>,
}

/// The abroad ledger. `Default` is an empty ledger, for a first start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    version: u32,
    trips: Vec<Trip>,
    /// By modem id.
    modems: BTreeMap<String, ModemCounters>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            version: VERSION,
            trips: Vec::new(),
            modems: BTreeMap::new(),
        }
    }
}

impl Ledger {
    /// The ledger as stored in the state directory (JSON).
    pub fn to_bytes(&self) -> Result<Vec<u8>, LedgerError> {
        serde_json::to_vec_pretty(self).map_err(LedgerError::Encode)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LedgerError> {
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(LedgerError::Decode)?;
        if head.version != VERSION {
            return Err(LedgerError::Version(head.version));
        }
        serde_json::from_slice(bytes).map_err(LedgerError::Decode)
    }

    /// Open trips and closed ones not yet acknowledged, oldest first, as the report carries them.
    pub fn abroad(&self) -> Vec<AbroadPeriod> {
        self.trips
            .iter()
            .map(|t| AbroadPeriod {
                country: t.country.clone(),
                mcc: t.mcc.clone(),
                entered_ms: t.entered_ms,
                left_ms: t.closed_at_ms.map(|_| t.last_seen_ms),
                rx_bytes: t.rx_bytes,
                tx_bytes: t.tx_bytes,
            })
            .collect()
    }

    /// Drops the closed trips a report built from the `observe` at `observed_ms` carried.
    /// Returns whether anything was dropped (then persist).
    pub fn prune_acknowledged(&mut self, observed_ms: i64) -> bool {
        let before = self.trips.len();
        self.trips
            .retain(|t| t.closed_at_ms.is_none_or(|c| c > observed_ms));
        self.trips.len() != before
    }

    /// Takes one observation at `now_ms`. Returns whether the ledger changed (then persist).
    pub fn observe(&mut self, snapshot: &Snapshot, now_ms: i64) -> bool {
        let before = self.clone();
        let manager = snapshot.manager.clone().unwrap_or_default();

        // Bytes since the last observation, per foreign MCC they are charged to.
        let mut abroad: BTreeMap<&str, (&str, u64, u64)> = BTreeMap::new();
        let mut home_seen = false;
        for m in &snapshot.modems {
            let (rx, tx) = self.count(&m.modem.id, &m.bearers, &manager, now_ms);
            match &m.whereabouts {
                Whereabouts::Home => home_seen = true,
                Whereabouts::Abroad { mcc, country } => {
                    let e = abroad
                        .entry(mcc.as_str())
                        .or_insert((country.as_str(), 0, 0));
                    e.1 = e.1.saturating_add(rx);
                    e.2 = e.2.saturating_add(tx);
                }
                Whereabouts::Unknown => {}
            }
        }
        self.forget_old_modems();

        for (mcc, (country, rx, tx)) in &abroad {
            let open = self
                .trips
                .iter_mut()
                .find(|t| t.closed_at_ms.is_none() && t.mcc == *mcc);
            match open {
                Some(t) => {
                    t.last_seen_ms = t.last_seen_ms.max(now_ms);
                    t.rx_bytes = t.rx_bytes.saturating_add(*rx);
                    t.tx_bytes = t.tx_bytes.saturating_add(*tx);
                    if t.country.is_empty() {
                        t.country = (*country).to_string();
                    }
                }
                None => self.trips.push(Trip {
                    mcc: (*mcc).to_string(),
                    country: (*country).to_string(),
                    entered_ms: now_ms,
                    last_seen_ms: now_ms,
                    closed_at_ms: None,
                    rx_bytes: *rx,
                    tx_bytes: *tx,
                }),
            }
        }

        let registered_somewhere = home_seen || !abroad.is_empty();
        for t in self.trips.iter_mut().filter(|t| t.closed_at_ms.is_none()) {
            if abroad.contains_key(t.mcc.as_str()) {
                continue;
            }
            let gone_quiet = now_ms.saturating_sub(t.last_seen_ms) > GAP_MS;
            if registered_somewhere || gone_quiet {
                t.closed_at_ms = Some(now_ms.max(t.last_seen_ms));
            }
        }

        let closed = self
            .trips
            .iter()
            .filter(|t| t.closed_at_ms.is_some())
            .count();
        let mut excess = closed.saturating_sub(MAX_CLOSED_TRIPS);
        self.trips.retain(|t| {
            if excess > 0 && t.closed_at_ms.is_some() {
                excess -= 1;
                return false;
            }
            true
        });

        *self != before
    }

    /// Follows one modem's bearer counters; returns the bytes since the last observation.
    fn count(
        &mut self,
        modem_id: &str,
        bearers: &[super::BearerSnapshot],
        manager: &str,
        now_ms: i64,
    ) -> (u64, u64) {
        let seen_before = self.modems.contains_key(modem_id);
        let counters = self.modems.entry(modem_id.to_string()).or_default();
        counters.last_seen_ms = now_ms;
        let mut next = BTreeMap::new();
        let (mut rx, mut tx) = (0u64, 0u64);
        for b in bearers {
            let (drx, dtx) = match counters.bearers.get(&b.path) {
                Some(old) if old.manager == manager && old.counter == b.counter => {
                    // Same bearer, same connection: growth, or a reset when the value dropped.
                    let d = |new: u64, old: u64| if new >= old { new - old } else { new };
                    (d(b.rx_bytes, old.rx_bytes), d(b.tx_bytes, old.tx_bytes))
                }
                // A bearer (or connection) new since the last observation: all of it is new.
                _ if seen_before => (b.rx_bytes, b.tx_bytes),
                _ => (0, 0),
            };
            rx = rx.saturating_add(drx);
            tx = tx.saturating_add(dtx);
            next.insert(
                b.path.clone(),
                Baseline {
                    manager: manager.to_string(),
                    counter: b.counter,
                    rx_bytes: b.rx_bytes,
                    tx_bytes: b.tx_bytes,
                },
            );
        }
        // Bearers that are gone are forgotten: their objects never come back.
        counters.bearers = next;
        (rx, tx)
    }

    fn forget_old_modems(&mut self) {
        while self.modems.len() > MAX_MODEMS {
            let oldest = self
                .modems
                .iter()
                .min_by_key(|(_, c)| c.last_seen_ms)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.modems.remove(&id),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BearerSnapshot, ModemSnapshot};
    use super::*;
    use vakt_proto::model::Modem;

    const MIN: i64 = 60_000;

    /// One modem's state at an observation, in shorthand.
    #[derive(Clone)]
    struct M {
        id: &'static str,
        at: Where,
        /// (path, rx, tx, counter)
        bearers: Vec<(&'static str, u64, u64, Counter)>,
    }

    #[derive(Clone, Copy)]
    enum Where {
        Home,
        Abroad(&'static str, &'static str),
        Nowhere,
    }

    fn snap(manager: &str, modems: &[M]) -> Snapshot {
        Snapshot {
            manager: Some(manager.to_string()),
            modems: modems
                .iter()
                .map(|m| ModemSnapshot {
                    modem: Modem {
                        id: m.id.to_string(),
                        ..Modem::default()
                    },
                    whereabouts: match m.at {
                        Where::Home => Whereabouts::Home,
                        Where::Abroad(mcc, c) => Whereabouts::Abroad {
                            mcc: mcc.into(),
                            country: c.into(),
                        },
                        Where::Nowhere => Whereabouts::Unknown,
                    },
                    bearers: m
                        .bearers
                        .iter()
                        .map(|(path, rx, tx, counter)| BearerSnapshot {
                            path: path.to_string(),
                            connected: true,
                            rx_bytes: *rx,
                            tx_bytes: *tx,
                            counter: *counter,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn modem(at: Where, rx: u64, tx: u64) -> M {
        M {
            id: "imei-1",
            at,
            bearers: vec![("/b/0", rx, tx, Counter::Total)],
        }
    }

    const HOME: Where = Where::Home;
    const NO: Where = Where::Abroad("242", "NO");
    const FI: Where = Where::Abroad("244", "FI");

    fn period(
        country: &str,
        mcc: &str,
        entered: i64,
        left: Option<i64>,
        rx: u64,
        tx: u64,
    ) -> AbroadPeriod {
        AbroadPeriod {
            country: country.into(),
            mcc: mcc.into(),
            entered_ms: entered,
            left_ms: left,
            rx_bytes: rx,
            tx_bytes: tx,
        }
    }

    struct Case {
        name: &'static str,
        /// (time, manager, modems)
        steps: Vec<(i64, &'static str, Vec<M>)>,
        want: Vec<AbroadPeriod>,
    }

    #[test]
    fn trips_table() {
        let cases = vec![
            Case {
                name: "a stay at home makes no trip",
                steps: vec![
                    (0, ":1.1", vec![modem(HOME, 0, 0)]),
                    (MIN, ":1.1", vec![modem(HOME, 5000, 100)]),
                ],
                want: vec![],
            },
            Case {
                name: "to Norway and back: only the bytes used there",
                steps: vec![
                    (0, ":1.1", vec![modem(HOME, 1000, 100)]),
                    (10 * MIN, ":1.1", vec![modem(NO, 1500, 150)]),
                    (20 * MIN, ":1.1", vec![modem(NO, 4000, 400)]),
                    (30 * MIN, ":1.1", vec![modem(HOME, 9000, 900)]),
                ],
                want: vec![period("NO", "242", 10 * MIN, Some(20 * MIN), 3000, 300)],
            },
            Case {
                name: "still abroad: open, no left time",
                steps: vec![
                    (0, ":1.1", vec![modem(HOME, 0, 0)]),
                    (MIN, ":1.1", vec![modem(NO, 10, 1)]),
                ],
                want: vec![period("NO", "242", MIN, None, 10, 1)],
            },
            Case {
                name: "Norway then Finland: two trips",
                steps: vec![
                    (0, ":1.1", vec![modem(NO, 0, 0)]),
                    (MIN, ":1.1", vec![modem(NO, 100, 10)]),
                    (2 * MIN, ":1.1", vec![modem(FI, 300, 30)]),
                    (3 * MIN, ":1.1", vec![modem(HOME, 300, 30)]),
                ],
                want: vec![
                    period("NO", "242", 0, Some(MIN), 100, 10),
                    period("FI", "244", 2 * MIN, Some(2 * MIN), 200, 20),
                ],
            },
            Case {
                name: "a short loss of signal does not end the trip",
                steps: vec![
                    (0, ":1.1", vec![modem(HOME, 0, 0)]),
                    (MIN, ":1.1", vec![modem(NO, 100, 10)]),
                    (2 * MIN, ":1.1", vec![modem(Where::Nowhere, 100, 10)]),
                    (3 * MIN, ":1.1", vec![]),
                    (4 * MIN, ":1.1", vec![modem(NO, 150, 15)]),
                ],
                want: vec![period("NO", "242", MIN, None, 150, 15)],
            },
            Case {
                name: "no registration for longer than the gap closes it at the last sighting",
                steps: vec![
                    (0, ":1.1", vec![modem(HOME, 0, 0)]),
                    (MIN, ":1.1", vec![modem(NO, 100, 10)]),
                    (
                        MIN + GAP_MS + 1,
                        ":1.1",
                        vec![modem(Where::Nowhere, 100, 10)],
                    ),
                ],
                want: vec![period("NO", "242", MIN, Some(MIN), 100, 10)],
            },
            Case {
                name: "a reconnect zeroes the ongoing counter: count from zero",
                steps: vec![
                    (
                        0,
                        ":1.1",
                        vec![M {
                            id: "m",
                            at: NO,
                            bearers: vec![("/b/0", 0, 0, Counter::Ongoing { start_date: 1 })],
                        }],
                    ),
                    (
                        MIN,
                        ":1.1",
                        vec![M {
                            id: "m",
                            at: NO,
                            bearers: vec![("/b/0", 800, 80, Counter::Ongoing { start_date: 1 })],
                        }],
                    ),
                    // Reconnected and already past the old value: only start-date tells.
                    (
                        2 * MIN,
                        ":1.1",
                        vec![M {
                            id: "m",
                            at: NO,
                            bearers: vec![("/b/0", 900, 90, Counter::Ongoing { start_date: 2 })],
                        }],
                    ),
                    // Reconnected without a start-date: the value dropped.
                    (
                        3 * MIN,
                        ":1.1",
                        vec![M {
                            id: "m",
                            at: NO,
                            bearers: vec![("/b/0", 50, 5, Counter::Ongoing { start_date: 2 })],
                        }],
                    ),
                ],
                want: vec![period("NO", "242", 0, None, 800 + 900 + 50, 80 + 90 + 5)],
            },
            Case {
                name: "ModemManager restarted: same path, new bearer object",
                steps: vec![
                    (0, ":1.1", vec![modem(NO, 0, 0)]),
                    (MIN, ":1.1", vec![modem(NO, 500, 50)]),
                    (2 * MIN, ":1.7", vec![modem(NO, 700, 70)]),
                ],
                want: vec![period("NO", "242", 0, None, 500 + 700, 50 + 70)],
            },
            Case {
                name: "modem unplugged and back with new bearers: counted in full",
                steps: vec![
                    (0, ":1.1", vec![modem(NO, 0, 0)]),
                    (MIN, ":1.1", vec![modem(NO, 100, 10)]),
                    (2 * MIN, ":1.1", vec![]),
                    (
                        3 * MIN,
                        ":1.1",
                        vec![M {
                            id: "imei-1",
                            at: NO,
                            bearers: vec![("/b/4", 40, 4, Counter::Total)],
                        }],
                    ),
                ],
                want: vec![period("NO", "242", 0, None, 140, 14)],
            },
            Case {
                name: "a modem first seen abroad only sets the baseline",
                steps: vec![
                    (0, ":1.1", vec![modem(NO, 123_456, 789)]),
                    (MIN, ":1.1", vec![modem(NO, 123_500, 800)]),
                ],
                want: vec![period("NO", "242", 0, None, 44, 11)],
            },
            Case {
                name: "data over a home modem is not charged to a trip of another",
                steps: vec![
                    (
                        0,
                        ":1.1",
                        vec![
                            M {
                                id: "a",
                                ..modem(NO, 0, 0)
                            },
                            M {
                                id: "b",
                                ..modem(HOME, 0, 0)
                            },
                        ],
                    ),
                    (
                        MIN,
                        ":1.1",
                        vec![
                            M {
                                id: "a",
                                ..modem(NO, 10, 1)
                            },
                            M {
                                id: "b",
                                ..modem(HOME, 9999, 999)
                            },
                        ],
                    ),
                ],
                want: vec![period("NO", "242", 0, None, 10, 1)],
            },
            Case {
                name: "clock stepped back: left never before entered",
                steps: vec![
                    (10 * MIN, ":1.1", vec![modem(NO, 0, 0)]),
                    (5 * MIN, ":1.1", vec![modem(HOME, 0, 0)]),
                ],
                want: vec![period("NO", "242", 10 * MIN, Some(10 * MIN), 0, 0)],
            },
        ];
        for case in cases {
            let mut ledger = Ledger::default();
            for (now, manager, modems) in &case.steps {
                ledger.observe(&snap(manager, modems), *now);
            }
            assert_eq!(ledger.abroad(), case.want, "{}", case.name);
        }
    }

    #[test]
    fn agent_restart_mid_trip_continues_from_the_stored_ledger() {
        let mut ledger = Ledger::default();
        ledger.observe(&snap(":1.1", &[modem(HOME, 0, 0)]), 0);
        ledger.observe(&snap(":1.1", &[modem(NO, 100, 10)]), MIN);
        let stored = ledger.to_bytes().unwrap();

        let mut restarted = Ledger::from_bytes(&stored).unwrap();
        assert_eq!(restarted, ledger);
        restarted.observe(&snap(":1.1", &[modem(NO, 250, 25)]), 5 * MIN);
        restarted.observe(&snap(":1.1", &[modem(HOME, 300, 30)]), 6 * MIN);
        assert_eq!(
            restarted.abroad(),
            [period("NO", "242", MIN, Some(5 * MIN), 250, 25)]
        );
    }

    #[test]
    fn acknowledged_closed_trips_are_pruned_open_ones_stay() {
        let mut ledger = Ledger::default();
        ledger.observe(&snap(":1.1", &[modem(NO, 0, 0)]), 0);
        ledger.observe(&snap(":1.1", &[modem(HOME, 0, 0)]), MIN);
        ledger.observe(&snap(":1.1", &[modem(FI, 0, 0)]), 2 * MIN);
        assert_eq!(ledger.abroad().len(), 2);

        // A report built before the first trip closed does not acknowledge it.
        assert!(!ledger.prune_acknowledged(0));
        assert_eq!(ledger.abroad().len(), 2);
        assert!(ledger.prune_acknowledged(2 * MIN));
        assert_eq!(ledger.abroad(), [period("FI", "244", 2 * MIN, None, 0, 0)]);
    }

    #[test]
    fn observe_says_when_to_persist() {
        let mut ledger = Ledger::default();
        assert!(!ledger.observe(&Snapshot::default(), 0), "nothing to keep");
        assert!(ledger.observe(&snap(":1.1", &[modem(HOME, 0, 0)]), 0));
        assert!(!ledger.observe(&snap(":1.1", &[modem(HOME, 0, 0)]), 0));
        assert!(
            ledger.observe(&snap(":1.1", &[modem(HOME, 5, 0)]), 0),
            "baseline moved"
        );
    }

    #[test]
    fn closed_trips_are_capped_oldest_first() {
        let mut ledger = Ledger::default();
        let mut now = 0;
        for _ in 0..(MAX_CLOSED_TRIPS + 5) {
            ledger.observe(&snap(":1.1", &[modem(NO, 0, 0)]), now);
            ledger.observe(&snap(":1.1", &[modem(HOME, 0, 0)]), now + 1);
            now += 10;
        }
        let abroad = ledger.abroad();
        assert_eq!(abroad.len(), MAX_CLOSED_TRIPS);
        assert_eq!(abroad[0].entered_ms, 50, "the five oldest went");
    }

    #[test]
    fn bad_files_are_errors() {
        for (bytes, want) in [
            (&b""[..], "not valid"),
            (b"{\"version\":1,\"trips\":[{}],\"modems\":{}}", "not valid"),
            (b"{\"version\":9,\"trips\":[],\"modems\":{}}", "version 9"),
            (b"[1,2]", "not valid"),
        ] {
            let err = Ledger::from_bytes(bytes).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let empty = Ledger::default();
        assert_eq!(
            Ledger::from_bytes(&empty.to_bytes().unwrap()).unwrap(),
            empty
        );
    }
}
