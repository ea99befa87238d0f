//! The roaming collector against a real `dbus-daemon` on a private bus, with python-dbusmock's
//! `modemmanager` template standing in for ModemManager. The template gives a modem with a SIM
//! (`AddSimpleModem`); the tests add what it lacks (3GPP registration, operator, the SIM's home
//! network, bearers with their stats) with AddProperty, AddObject and UpdateProperties, exactly as
//! ModemManager publishes them. The bus address is passed to the collector; the test process's
//! environment is never touched.

// The fixture helpers below are test code too: a broken fixture should panic where it broke.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use vakt_agent::collect::roaming::{self, BusAddress, HomeMccs, Ledger, Snapshot, Watcher};
use vakt_tests::dbus::{Mock, PrivateBus};
use vakt_tests::mm::{
    BEARER, BEARER_PATH, IMEI, MODEM, add_home_modem, come_home, roam_to_norway, stats,
};
use vakt_tests::skip_unless_dbus;
use zbus::zvariant::{ObjectPath, Value};

/// The bound: the server has a change within 5 s. The agent's part must be well inside.
const NOTIFY_WITHIN: Duration = Duration::from_secs(5);

/// ModemManager with one modem registered at home in Sweden, no data bearer.
struct Home {
    bus: PrivateBus,
    mock: Mock,
    modem: String,
}

async fn start_bus() -> Result<PrivateBus, vakt_tests::dbus::Error> {
    PrivateBus::start().await
}

async fn start_mm(bus: &PrivateBus) -> Result<Mock, vakt_tests::dbus::Error> {
    Mock::start(bus, "modemmanager", &json!({})).await
}

async fn collect(bus: &PrivateBus) -> Snapshot {
    let out = roaming::collect(&BusAddress::new(bus.address()), &HomeMccs::default()).await;
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.value
}

async fn home() -> Result<Home, vakt_tests::dbus::Error> {
    let bus = start_bus().await?;
    let mock = start_mm(&bus).await?;
    let modem = add_home_modem(&mock).await;
    Ok(Home { bus, mock, modem })
}

/// Waits for the next notification; returns it with how long it took.
async fn next_change(watcher: &mut Watcher) -> (roaming::Change, Duration) {
    let start = Instant::now();
    let change = tokio::time::timeout(NOTIFY_WITHIN, watcher.changed())
        .await
        .expect("a change notification within 5 s")
        .expect("the watcher is still running");
    (change, start.elapsed())
}

/// Reads and drops whatever notifications arrive within `quiet`; returns them.
async fn drain(watcher: &mut Watcher, quiet: Duration) -> Vec<roaming::Change> {
    let mut seen = Vec::new();
    while let Ok(Some(c)) = tokio::time::timeout(quiet, watcher.changed()).await {
        seen.push(c);
    }
    seen
}

#[tokio::test]
async fn no_modemmanager_on_the_bus_is_no_modem() {
    let bus = skip_unless_dbus!(start_bus().await);
    let snap = collect(&bus).await;
    assert_eq!(snap, Snapshot::default());
    let state = snap.state(&Ledger::default());
    assert_eq!(
        serde_json::to_value(&state).unwrap(),
        json!({"modems": []}),
        "the report shows no modem, and no error"
    );
}

#[tokio::test]
async fn modemmanager_without_a_modem_is_no_modem() {
    let bus = skip_unless_dbus!(start_bus().await);
    let _mock = skip_unless_dbus!(start_mm(&bus).await);
    let snap = collect(&bus).await;
    assert!(snap.manager.as_deref().is_some_and(|m| m.starts_with(':')));
    assert!(snap.modems.is_empty());
}

#[tokio::test]
async fn a_modem_at_home() {
    let h = skip_unless_dbus!(home().await);
    let snap = collect(&h.bus).await;
    assert_eq!(snap.modems.len(), 1, "{}", h.mock.logs());
    let m = &snap.modems[0].modem;
    assert_eq!(m.id, IMEI);
    assert_eq!(m.state, "registered");
    assert_eq!(m.registration, "home");
    assert!(!m.roaming);
    assert_eq!(
        (m.operator_mcc.as_str(), m.operator_mnc.as_str()),
        ("240", "01")
    );
    assert_eq!(m.operator_name, "Telia");
    assert_eq!(m.country, "SE");
    assert_eq!(m.home_mcc, "240");
    assert!(!m.data_connected);
    assert_eq!((m.rx_bytes, m.tx_bytes), (0, 0));
    assert_eq!(m.model, "Sierra Wireless E1750");
    assert_eq!(snap.modems[0].whereabouts, roaming::Whereabouts::Home);
}

#[tokio::test]
async fn roaming_in_norway_with_data() {
    let h = skip_unless_dbus!(home().await);
    roam_to_norway(&h.mock, &h.modem, 1_048_576, 4096).await;

    let snap = collect(&h.bus).await;
    let m = &snap.modems[0].modem;
    assert_eq!(m.registration, "roaming");
    assert!(m.roaming);
    assert_eq!(m.state, "connected");
    assert_eq!(
        (m.operator_mcc.as_str(), m.operator_mnc.as_str()),
        ("242", "01")
    );
    assert_eq!(m.operator_name, "Telenor");
    assert_eq!(m.country, "NO");
    assert_eq!(m.home_mcc, "240");
    assert!(m.data_connected);
    assert_eq!((m.rx_bytes, m.tx_bytes), (1_048_576, 4096));

    // The shape INTERFACE.md gives for `roaming`.
    let state = serde_json::to_value(snap.state(&Ledger::default())).unwrap();
    let modem = &state["modems"][0];
    for (key, want) in [
        ("registration", json!("roaming")),
        ("roaming", json!(true)),
        ("operator_mcc", json!("242")),
        ("country", json!("NO")),
        ("home_mcc", json!("240")),
        ("data_connected", json!(true)),
        ("rx_bytes", json!(1_048_576)),
        ("tx_bytes", json!(4096)),
    ] {
        assert_eq!(modem[key], want, "{key} in {modem}");
    }
}

#[tokio::test]
async fn a_trip_to_norway_is_ledgered_with_its_bytes() {
    let h = skip_unless_dbus!(home().await);
    let mut ledger = Ledger::default();
    ledger.observe(&collect(&h.bus).await, 1_000);

    roam_to_norway(&h.mock, &h.modem, 500, 50).await;
    ledger.observe(&collect(&h.bus).await, 2_000);
    h.mock
        .update_properties(BEARER_PATH, BEARER, &[("Stats", stats(3_500, 350))])
        .await
        .unwrap();
    ledger.observe(&collect(&h.bus).await, 3_000);

    // A reconnect abroad: the ongoing counters restart but the totals go on.
    let reconnect: HashMap<&str, Value<'_>> = [
        ("rx-bytes", Value::U64(100)),
        ("tx-bytes", Value::U64(10)),
        ("total-rx-bytes", Value::U64(3_600)),
        ("total-tx-bytes", Value::U64(360)),
    ]
    .into();
    h.mock
        .update_properties(BEARER_PATH, BEARER, &[("Stats", Value::from(reconnect))])
        .await
        .unwrap();
    ledger.observe(&collect(&h.bus).await, 4_000);

    come_home(&h.mock, &h.modem).await;
    let snap = collect(&h.bus).await;
    ledger.observe(&snap, 5_000);

    let abroad = ledger.abroad();
    assert_eq!(abroad.len(), 1, "{abroad:?}");
    let trip = &abroad[0];
    assert_eq!((trip.country.as_str(), trip.mcc.as_str()), ("NO", "242"));
    assert_eq!((trip.entered_ms, trip.left_ms), (2_000, Some(4_000)));
    // The bearer appeared while abroad on a modem already known: all of its bytes count.
    assert_eq!((trip.rx_bytes, trip.tx_bytes), (3_600, 360));

    let state = snap.state(&ledger);
    assert_eq!(state.abroad, abroad);
    assert!(ledger.prune_acknowledged(5_000));
    assert!(ledger.abroad().is_empty());
}

#[tokio::test]
async fn a_missing_bearer_is_an_error_and_the_rest_stands() {
    let h = skip_unless_dbus!(home().await);
    let gone = ObjectPath::try_from("/org/freedesktop/ModemManager1/Bearer/9").unwrap();
    h.mock
        .update_properties(&h.modem, MODEM, &[("Bearers", Value::from(vec![gone]))])
        .await
        .unwrap();
    let out = roaming::collect(&BusAddress::new(h.bus.address()), &HomeMccs::default()).await;
    assert_eq!(out.value.modems.len(), 1);
    assert_eq!(out.value.modems[0].modem.registration, "home");
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(
        out.errors[0].source,
        "/org/freedesktop/ModemManager1/Bearer/9"
    );
    assert!(
        out.errors[0].message.contains("Bearer"),
        "{:?}",
        out.errors[0]
    );
}

#[tokio::test]
async fn the_watcher_reports_roaming_and_back_within_seconds() {
    let h = skip_unless_dbus!(home().await);
    let address = BusAddress::new(h.bus.address());
    let mut watcher = roaming::watch(&address).await.unwrap();

    roam_to_norway(&h.mock, &h.modem, 2048, 512).await;
    let (change, took) = next_change(&mut watcher).await;
    eprintln!("roaming noticed after {took:?}: {:?}", change.reasons);
    assert!(
        change
            .reasons
            .iter()
            .any(|r| r.contains("RegistrationState")),
        "{change:?}"
    );
    let _ = drain(&mut watcher, Duration::from_millis(800)).await;
    let snap = collect(&h.bus).await;
    assert!(snap.modems[0].modem.roaming && snap.modems[0].modem.data_connected);
    assert_eq!(snap.modems[0].modem.country, "NO");

    // Counters tick all the time; they wait for the regular report.
    h.mock
        .update_properties(BEARER_PATH, BEARER, &[("Stats", stats(9999, 999))])
        .await
        .unwrap();
    let noise = drain(&mut watcher, Duration::from_millis(1500)).await;
    assert!(noise.is_empty(), "stats alone woke the daemon: {noise:?}");

    come_home(&h.mock, &h.modem).await;
    let (change, took) = next_change(&mut watcher).await;
    eprintln!("home noticed after {took:?}: {:?}", change.reasons);
    let _ = drain(&mut watcher, Duration::from_millis(800)).await;
    let snap = collect(&h.bus).await;
    let m = &snap.modems[0].modem;
    assert!(!m.roaming && !m.data_connected);
    assert_eq!(m.country, "SE");
}

#[tokio::test]
async fn the_watcher_sees_modemmanager_and_modems_come_and_go() {
    let bus = skip_unless_dbus!(start_bus().await);
    let mut watcher = roaming::watch(&BusAddress::new(bus.address()))
        .await
        .unwrap();

    let mock = skip_unless_dbus!(start_mm(&bus).await);
    let (change, _) = next_change(&mut watcher).await;
    assert!(
        change.reasons.contains(&"ModemManager started".to_string()),
        "{change:?}"
    );

    let _ = drain(&mut watcher, Duration::from_millis(500)).await;
    let modem = add_home_modem(&mock).await;
    let (change, _) = next_change(&mut watcher).await;
    assert!(
        change
            .reasons
            .iter()
            .any(|r| r == &format!("{modem} added")),
        "{change:?}"
    );

    let _ = drain(&mut watcher, Duration::from_millis(500)).await;
    mock.stop().await.unwrap();
    let (change, _) = next_change(&mut watcher).await;
    assert!(
        change.reasons.contains(&"ModemManager stopped".to_string()),
        "{change:?}"
    );
    assert!(collect(&bus).await.modems.is_empty());
}

#[tokio::test]
async fn the_watcher_ends_when_the_bus_goes() {
    let bus = skip_unless_dbus!(start_bus().await);
    let mut watcher = roaming::watch(&BusAddress::new(bus.address()))
        .await
        .unwrap();
    drop(bus);
    let end = tokio::time::timeout(NOTIFY_WITHIN, async {
        while watcher.changed().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "changed() returns None once the bus is gone");
}
