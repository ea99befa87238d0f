//! The pure core of the roaming collector: ModemManager's D-Bus properties, already read off the
//! bus into plain values ([`Prop`]), become the report's [`Modem`] and the facts the abroad ledger
//! needs. No bus, no clock here, so every mapping is tested without a modem.
//!
//! Property names, types and enumerations are those of ModemManager's D-Bus API
//! (`org.freedesktop.ModemManager1.*.xml` and `ModemManager-enums.h`, ModemManager 1.20):
//! `Modem.State` is an `i` (MMModemState), `Modem3gpp.RegistrationState` a `u`
//! (MMModem3gppRegistrationState), `Modem3gpp.OperatorCode` the `"MCCMNC"` string (blank when not
//! registered), `Sim.OperatorIdentifier` the SIM's home `"MCCMNC"`, `Bearer.Stats` an `a{sv}` with
//! `rx-bytes`/`tx-bytes` for the ongoing connection (zeroed on every reconnect) and, since 1.14,
//! `total-rx-bytes`/`total-tx-bytes` over every connection of that bearer object.

use std::collections::BTreeMap;

use vakt_proto::model::Modem;

use super::mcc;
use super::{BearerSnapshot, Counter, HomeMccs, ModemSnapshot, Whereabouts};

pub(crate) const MODEM_IFACE: &str = "org.freedesktop.ModemManager1.Modem";
pub(crate) const MODEM_3GPP_IFACE: &str = "org.freedesktop.ModemManager1.Modem.Modem3gpp";
pub(crate) const SIM_IFACE: &str = "org.freedesktop.ModemManager1.Sim";
pub(crate) const BEARER_IFACE: &str = "org.freedesktop.ModemManager1.Bearer";

/// A D-Bus value reduced to what the mapping needs. Integer widths are folded together so a
/// service that sends a `u` where the spec says `i` (mocks do) still reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(String),
    Path(String),
    List(Vec<Prop>),
    Dict(BTreeMap<String, Prop>),
    /// Anything else (doubles, file descriptors), kept as its D-Bus signature for messages.
    Other(String),
}

/// One interface's properties, by name.
pub type Props = BTreeMap<String, Prop>;

impl Prop {
    fn kind(&self) -> &'static str {
        match self {
            Prop::Bool(_) => "a boolean",
            Prop::Int(_) | Prop::UInt(_) => "an integer",
            Prop::Str(_) => "a string",
            Prop::Path(_) => "an object path",
            Prop::List(_) => "an array",
            Prop::Dict(_) => "a dictionary",
            Prop::Other(_) => "another type",
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Prop::Int(i) => Some(*i),
            Prop::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Prop::Int(i) => u64::try_from(*i).ok(),
            Prop::UInt(u) => Some(*u),
            _ => None,
        }
    }
}

/// One modem as read off the bus: its object path, every interface the object manager listed
/// for it, its SIM's properties (if it has one and they could be read) and its bearers'.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawModem {
    pub path: String,
    pub interfaces: BTreeMap<String, Props>,
    /// The SIM's object path and properties, when it has one and they could be read.
    pub sim: Option<(String, Props)>,
    pub bearers: Vec<(String, Props)>,
}

/// A property that was there but could not be used: the object path and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Reads typed properties of one object, recording every property of the wrong type.
struct Reader<'a> {
    path: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Reader<'_> {
    fn problem(&mut self, message: String) {
        self.problems.push(Problem {
            path: self.path.to_string(),
            message,
        });
    }

    fn wrong(&mut self, iface: &str, name: &str, want: &str, got: &Prop) {
        let short = iface.rsplit('.').next().unwrap_or(iface);
        self.problem(format!("{short}.{name} is {}, expected {want}", got.kind()));
    }

    fn string(&mut self, props: Option<&Props>, iface: &str, name: &str) -> String {
        match props.and_then(|p| p.get(name)) {
            None => String::new(),
            Some(Prop::Str(s)) => s.trim().to_string(),
            Some(other) => {
                self.wrong(iface, name, "a string", other);
                String::new()
            }
        }
    }

    fn int(&mut self, props: Option<&Props>, iface: &str, name: &str) -> Option<i64> {
        let value = props.and_then(|p| p.get(name))?;
        let n = value.as_i64();
        if n.is_none() {
            self.wrong(iface, name, "an integer", value);
        }
        n
    }

    fn bool(&mut self, props: Option<&Props>, iface: &str, name: &str) -> bool {
        match props.and_then(|p| p.get(name)) {
            None => false,
            Some(Prop::Bool(b)) => *b,
            Some(other) => {
                self.wrong(iface, name, "a boolean", other);
                false
            }
        }
    }
}

/// MMModemState's nickname, as `mmcli` prints it.
pub fn modem_state_name(state: i64) -> String {
    let name = match state {
        -1 => "failed",
        0 => "unknown",
        1 => "initializing",
        2 => "locked",
        3 => "disabled",
        4 => "disabling",
        5 => "enabling",
        6 => "enabled",
        7 => "searching",
        8 => "registered",
        9 => "disconnecting",
        10 => "connecting",
        11 => "connected",
        other => return format!("unrecognized-{other}"),
    };
    name.to_string()
}

/// MMModem3gppRegistrationState's nickname. Values newer than this table keep their number.
pub fn registration_name(state: u64) -> String {
    let name = match state {
        0 => "idle",
        1 => "home",
        2 => "searching",
        3 => "denied",
        4 => "unknown",
        5 => "roaming",
        6 => "home-sms-only",
        7 => "roaming-sms-only",
        8 => "emergency-only",
        9 => "home-csfb-not-preferred",
        10 => "roaming-csfb-not-preferred",
        11 => "attached-rlos",
        other => return format!("unrecognized-{other}"),
    };
    name.to_string()
}

/// Registered on a visited network: ROAMING (5), ROAMING_SMS_ONLY (7),
/// ROAMING_CSFB_NOT_PREFERRED (10).
pub fn is_roaming(state: u64) -> bool {
    matches!(state, 5 | 7 | 10)
}

/// Registered on a network at all (home or visited, including the LTE "SMS only" and "CSFB not
/// preferred" variants). Emergency-only and RLOS attachments are not registrations.
pub fn is_registered(state: u64) -> bool {
    matches!(state, 1 | 5 | 6 | 7 | 9 | 10)
}

/// Splits a 3GPP `"MCCMNC"` operator code. `None` when it is not 5 or 6 ASCII digits.
pub fn split_operator_code(code: &str) -> Option<(&str, &str)> {
    let code = code.trim();
    if !(5..=6).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(code.split_at(3))
}

/// Where a modem is, for the abroad ledger: registered outside the home MCCs (the configured list,
/// or else the SIM's own MCC; with neither, ModemManager's roaming flag decides).
pub fn whereabouts(modem: &Modem, registered: bool, home: &HomeMccs) -> Whereabouts {
    if !registered || !mcc::is_mcc(&modem.operator_mcc) {
        return Whereabouts::Unknown;
    }
    let at_home = if !home.is_empty() {
        home.contains(&modem.operator_mcc)
    } else if mcc::is_mcc(&modem.home_mcc) {
        modem.home_mcc == modem.operator_mcc
    } else {
        !modem.roaming
    };
    if at_home {
        Whereabouts::Home
    } else {
        Whereabouts::Abroad {
            mcc: modem.operator_mcc.clone(),
            country: modem.country.clone(),
        }
    }
}

/// Maps one modem. Properties of the wrong type are left out and recorded in `problems`.
pub fn modem_snapshot(
    raw: &RawModem,
    home: &HomeMccs,
    problems: &mut Vec<Problem>,
) -> ModemSnapshot {
    let modem_props = raw.interfaces.get(MODEM_IFACE);
    let gpp = raw.interfaces.get(MODEM_3GPP_IFACE);
    let mut r = Reader {
        path: &raw.path,
        problems,
    };
    let mut m = Modem::default();

    let equipment = r.string(modem_props, MODEM_IFACE, "EquipmentIdentifier");
    let device = r.string(modem_props, MODEM_IFACE, "DeviceIdentifier");
    // The IMEI survives ModemManager restarts and re-plugging; the object path does not.
    m.id = [equipment, device, raw.path.clone()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    m.state = r
        .int(modem_props, MODEM_IFACE, "State")
        .map(modem_state_name)
        .unwrap_or_else(|| "unknown".to_string());
    let manufacturer = r.string(modem_props, MODEM_IFACE, "Manufacturer");
    let model = r.string(modem_props, MODEM_IFACE, "Model");
    m.model = if manufacturer.is_empty() || model.starts_with(&manufacturer) {
        model
    } else if model.is_empty() {
        manufacturer
    } else {
        format!("{manufacturer} {model}")
    };

    let registration = r.int(gpp, MODEM_3GPP_IFACE, "RegistrationState");
    let registration = registration.and_then(|n| u64::try_from(n).ok());
    m.registration = registration
        .map(registration_name)
        .unwrap_or_else(|| "unknown".to_string());
    m.roaming = registration.is_some_and(is_roaming);
    let operator_code = r.string(gpp, MODEM_3GPP_IFACE, "OperatorCode");
    match split_operator_code(&operator_code) {
        Some((mcc, mnc)) => {
            m.operator_mcc = mcc.to_string();
            m.operator_mnc = mnc.to_string();
        }
        None if operator_code.is_empty() => {}
        None => r.problem(format!(
            "Modem3gpp.OperatorCode {operator_code:?} is not an MCC and MNC of 5 or 6 digits"
        )),
    }
    m.operator_name = r.string(gpp, MODEM_3GPP_IFACE, "OperatorName");
    m.country = mcc::lookup(&m.operator_mcc).country();

    if let Some((sim_path, sim)) = &raw.sim {
        let mut r = Reader {
            path: sim_path,
            problems,
        };
        let operator = r.string(Some(sim), SIM_IFACE, "OperatorIdentifier");
        // The IMSI starts with the home MCC too; it is the fallback while the SIM has not
        // published its operator yet.
        let imsi = r.string(Some(sim), SIM_IFACE, "Imsi");
        m.home_mcc = [operator, imsi]
            .iter()
            .filter_map(|s| s.get(..3))
            .find(|p| mcc::is_mcc(p))
            .unwrap_or_default()
            .to_string();
    }

    let mut bearers: Vec<BearerSnapshot> = raw
        .bearers
        .iter()
        .map(|(path, props)| bearer_snapshot(path, props, problems))
        .collect();
    bearers.sort_by(|a, b| a.path.cmp(&b.path));
    m.data_connected = bearers.iter().any(|b| b.connected);
    m.rx_bytes = bearers
        .iter()
        .fold(0u64, |acc, b| acc.saturating_add(b.rx_bytes));
    m.tx_bytes = bearers
        .iter()
        .fold(0u64, |acc, b| acc.saturating_add(b.tx_bytes));

    let whereabouts = whereabouts(&m, registration.is_some_and(is_registered), home);
    ModemSnapshot {
        modem: m,
        whereabouts,
        bearers,
    }
}

/// Maps one bearer. Its counters are the totals over every connection of the bearer object when
/// ModemManager publishes them (1.14 and later), else the ongoing connection's.
pub fn bearer_snapshot(path: &str, props: &Props, problems: &mut Vec<Problem>) -> BearerSnapshot {
    let mut r = Reader { path, problems };
    let connected = r.bool(Some(props), BEARER_IFACE, "Connected");
    let stats = match props.get("Stats") {
        None => None,
        Some(Prop::Dict(d)) => Some(d),
        Some(other) => {
            r.wrong(BEARER_IFACE, "Stats", "a dictionary", other);
            None
        }
    };
    let mut counter = |key: &str| -> Option<u64> {
        let v = stats?.get(key)?;
        let n = v.as_u64();
        if n.is_none() {
            r.problem(format!(
                "Bearer.Stats {key:?} is {}, expected an unsigned integer",
                v.kind()
            ));
        }
        n
    };
    let total_rx = counter("total-rx-bytes");
    let total_tx = counter("total-tx-bytes");
    let (rx_bytes, tx_bytes, counter_kind) = if total_rx.is_some() || total_tx.is_some() {
        (total_rx.unwrap_or(0), total_tx.unwrap_or(0), Counter::Total)
    } else {
        let rx = counter("rx-bytes").unwrap_or(0);
        let tx = counter("tx-bytes").unwrap_or(0);
        let start_date = counter("start-date").unwrap_or(0);
        (rx, tx, Counter::Ongoing { start_date })
    };
    BearerSnapshot {
        path: path.to_string(),
        connected,
        rx_bytes,
        tx_bytes,
        counter: counter_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(list: &[(&str, Prop)]) -> Props {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> Prop {
        Prop::Str(v.to_string())
    }

    fn raw(reg: u64, code: &str, sim_operator: &str) -> RawModem {
        let mut interfaces = BTreeMap::new();
        interfaces.insert(
            MODEM_IFACE.to_string(),
            props(&[
                ("State", Prop::Int(11)),
                ("Manufacturer", s("Sierra Wireless")),
                ("Model", s("EM7455")),
                ("EquipmentIdentifier", s("356938035643809")),
            ]),
        );
        interfaces.insert(
            MODEM_3GPP_IFACE.to_string(),
            props(&[
                ("RegistrationState", Prop::UInt(reg)),
                ("OperatorCode", s(code)),
                ("OperatorName", s("Telenor")),
            ]),
        );
        RawModem {
            path: "/org/freedesktop/ModemManager1/Modem/0".into(),
            interfaces,
            sim: Some((
                "/org/freedesktop/ModemManager1/SIM/0".into(),
                props(&[("OperatorIdentifier", s(sim_operator))]),
            )),
            bearers: vec![],
        }
    }

    fn stats(list: &[(&str, u64)]) -> Prop {
        Prop::Dict(
            list.iter()
                .map(|(k, v)| (k.to_string(), Prop::UInt(*v)))
                .collect(),
        )
    }

    #[test]
    fn registration_names_follow_the_enum() {
        let expect = [
            (0, "idle", false, false),
            (1, "home", false, true),
            (2, "searching", false, false),
            (3, "denied", false, false),
            (4, "unknown", false, false),
            (5, "roaming", true, true),
            (6, "home-sms-only", false, true),
            (7, "roaming-sms-only", true, true),
            (8, "emergency-only", false, false),
            (9, "home-csfb-not-preferred", false, true),
            (10, "roaming-csfb-not-preferred", true, true),
            (11, "attached-rlos", false, false),
            (12, "unrecognized-12", false, false),
        ];
        for (n, name, roaming, registered) in expect {
            assert_eq!(registration_name(n), name);
            assert_eq!(is_roaming(n), roaming, "{n}");
            assert_eq!(is_registered(n), registered, "{n}");
        }
        assert_eq!(modem_state_name(-1), "failed");
        assert_eq!(modem_state_name(8), "registered");
        assert_eq!(modem_state_name(11), "connected");
        assert_eq!(modem_state_name(99), "unrecognized-99");
    }

    #[test]
    fn operator_codes() {
        let cases = [
            ("24001", Some(("240", "01"))),
            ("310260", Some(("310", "260"))),
            (" 24201 ", Some(("242", "01"))),
            ("2400", None),
            ("2400101", None),
            ("24O01", None),
            ("", None),
            ("２４００１", None),
        ];
        for (code, want) in cases {
            assert_eq!(split_operator_code(code), want, "{code:?}");
        }
    }

    #[test]
    fn modem_mapping_table() {
        struct Case {
            name: &'static str,
            reg: u64,
            code: &'static str,
            sim: &'static str,
            home: &'static [&'static str],
            registration: &'static str,
            roaming: bool,
            country: &'static str,
            home_mcc: &'static str,
            whereabouts: Whereabouts,
        }
        let abroad = |mcc: &str, country: &str| Whereabouts::Abroad {
            mcc: mcc.into(),
            country: country.into(),
        };
        let cases = [
            Case {
                name: "home in Sweden",
                reg: 1,
                code: "24001",
                sim: "24001",
                home: &[],
                registration: "home",
                roaming: false,
                country: "SE",
                home_mcc: "240",
                whereabouts: Whereabouts::Home,
            },
            Case {
                name: "roaming in Norway",
                reg: 5,
                code: "24201",
                sim: "24001",
                home: &[],
                registration: "roaming",
                roaming: true,
                country: "NO",
                home_mcc: "240",
                whereabouts: abroad("242", "NO"),
            },
            Case {
                name: "SMS-only roaming in Finland counts as abroad",
                reg: 7,
                code: "24405",
                sim: "24008",
                home: &[],
                registration: "roaming-sms-only",
                roaming: true,
                country: "FI",
                home_mcc: "240",
                whereabouts: abroad("244", "FI"),
            },
            Case {
                name: "national roaming stays home",
                reg: 5,
                code: "24002",
                sim: "24001",
                home: &[],
                registration: "roaming",
                roaming: true,
                country: "SE",
                home_mcc: "240",
                whereabouts: Whereabouts::Home,
            },
            Case {
                name: "configured home list wins over a foreign SIM",
                reg: 5,
                code: "24001",
                sim: "20408",
                home: &["240"],
                registration: "roaming",
                roaming: true,
                country: "SE",
                home_mcc: "204",
                whereabouts: Whereabouts::Home,
            },
            Case {
                name: "searching is no information",
                reg: 2,
                code: "",
                sim: "24001",
                home: &[],
                registration: "searching",
                roaming: false,
                country: "",
                home_mcc: "240",
                whereabouts: Whereabouts::Unknown,
            },
            Case {
                name: "satellite network has no country but is not home",
                reg: 5,
                code: "90112",
                sim: "24001",
                home: &[],
                registration: "roaming",
                roaming: true,
                country: "",
                home_mcc: "240",
                whereabouts: abroad("901", ""),
            },
            Case {
                name: "no SIM information: the roaming flag decides",
                reg: 10,
                code: "36251",
                sim: "",
                home: &[],
                registration: "roaming-csfb-not-preferred",
                roaming: true,
                country: "CW/SX/BQ",
                home_mcc: "",
                whereabouts: abroad("362", "CW/SX/BQ"),
            },
        ];
        for c in cases {
            let home = HomeMccs::new(c.home.iter().copied()).unwrap();
            let mut problems = vec![];
            let snap = modem_snapshot(&raw(c.reg, c.code, c.sim), &home, &mut problems);
            let m = &snap.modem;
            assert!(problems.is_empty(), "{}: {problems:?}", c.name);
            assert_eq!(m.registration, c.registration, "{}", c.name);
            assert_eq!(m.roaming, c.roaming, "{}", c.name);
            assert_eq!(m.country, c.country, "{}", c.name);
            assert_eq!(m.home_mcc, c.home_mcc, "{}", c.name);
            assert_eq!(snap.whereabouts, c.whereabouts, "{}", c.name);
            assert_eq!(m.id, "356938035643809");
            assert_eq!(m.state, "connected");
            assert_eq!(m.model, "Sierra Wireless EM7455");
            assert_eq!(m.operator_name, "Telenor");
        }
    }

    #[test]
    fn bearers_prefer_totals_and_sum_per_modem() {
        let mut r = raw(5, "24201", "24001");
        r.bearers = vec![
            (
                "/b/1".into(),
                props(&[
                    ("Connected", Prop::Bool(true)),
                    (
                        "Stats",
                        stats(&[
                            ("rx-bytes", 10),
                            ("tx-bytes", 20),
                            ("total-rx-bytes", 1000),
                            ("total-tx-bytes", 2000),
                        ]),
                    ),
                ]),
            ),
            (
                "/b/0".into(),
                props(&[
                    ("Connected", Prop::Bool(false)),
                    (
                        "Stats",
                        stats(&[
                            ("rx-bytes", 5),
                            ("tx-bytes", 6),
                            ("start-date", 1_700_000_000),
                        ]),
                    ),
                ]),
            ),
        ];
        let mut problems = vec![];
        let snap = modem_snapshot(&r, &HomeMccs::default(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(snap.modem.data_connected);
        assert_eq!((snap.modem.rx_bytes, snap.modem.tx_bytes), (1005, 2006));
        assert_eq!(snap.bearers[0].path, "/b/0", "sorted by path");
        assert_eq!(
            snap.bearers[0].counter,
            Counter::Ongoing {
                start_date: 1_700_000_000
            }
        );
        assert_eq!(snap.bearers[1].counter, Counter::Total);
    }

    #[test]
    fn wrong_types_are_reported_and_the_rest_stands() {
        let mut r = raw(5, "24201", "24001");
        let gpp = r.interfaces.get_mut(MODEM_3GPP_IFACE).unwrap();
        gpp.insert("RegistrationState".into(), s("roaming"));
        gpp.insert("OperatorCode".into(), s("Telenor"));
        r.interfaces
            .get_mut(MODEM_IFACE)
            .unwrap()
            .insert("State".into(), Prop::Bool(true));
        r.bearers = vec![(
            "/b/0".into(),
            props(&[
                ("Connected", Prop::UInt(1)),
                (
                    "Stats",
                    Prop::Dict([("rx-bytes".to_string(), s("lots"))].into()),
                ),
            ]),
        )];
        let mut problems = vec![];
        let snap = modem_snapshot(&r, &HomeMccs::default(), &mut problems);
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Modem.State is a boolean, expected an integer",
                "Modem3gpp.RegistrationState is a string, expected an integer",
                "Modem3gpp.OperatorCode \"Telenor\" is not an MCC and MNC of 5 or 6 digits",
                "Bearer.Connected is an integer, expected a boolean",
                "Bearer.Stats \"rx-bytes\" is a string, expected an unsigned integer",
            ]
        );
        assert_eq!(problems[0].path, "/org/freedesktop/ModemManager1/Modem/0");
        assert_eq!(problems[3].path, "/b/0");
        let m = &snap.modem;
        assert_eq!(
            (m.state.as_str(), m.registration.as_str()),
            ("unknown", "unknown")
        );
        assert_eq!(m.operator_mcc, "");
        assert_eq!(m.operator_name, "Telenor");
        assert_eq!(m.home_mcc, "240");
        assert_eq!(snap.whereabouts, Whereabouts::Unknown);
    }

    #[test]
    fn a_bare_modem_object_maps_to_unknowns() {
        let raw = RawModem {
            path: "/org/freedesktop/ModemManager1/Modem/3".into(),
            ..RawModem::default()
        };
        let mut problems = vec![];
        let snap = modem_snapshot(&raw, &HomeMccs::default(), &mut problems);
        assert!(problems.is_empty());
        assert_eq!(snap.modem.id, "/org/freedesktop/ModemManager1/Modem/3");
        assert_eq!(snap.modem.registration, "unknown");
        assert!(!snap.modem.roaming && !snap.modem.data_connected);
        assert_eq!(snap.whereabouts, Whereabouts::Unknown);
    }
}
