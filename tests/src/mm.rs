//! A ModemManager stand-in on a private bus: python-dbusmock's `modemmanager` template,
//! completed the way the real daemon publishes a modem (3GPP registration, operator, SIM home
//! network, bearers with stats). Shared by the roaming collector tests and the end-to-end tests.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use crate::dbus::{MOCK_IFACE, Mock};
use zbus::zvariant::{ObjectPath, Value};

pub const MODEM: &str = "org.freedesktop.ModemManager1.Modem";
pub const MODEM_3GPP: &str = "org.freedesktop.ModemManager1.Modem.Modem3gpp";
pub const SIM: &str = "org.freedesktop.ModemManager1.Sim";
pub const BEARER: &str = "org.freedesktop.ModemManager1.Bearer";
pub const BEARER_PATH: &str = "/org/freedesktop/ModemManager1/Bearer/0";
pub const IMEI: &str = "356938035643809";

/// Adds the template's simple modem and completes it as a real one at home looks.
pub async fn add_home_modem(mock: &Mock) -> String {
    let reply = mock
        .call(mock.main_path(), MOCK_IFACE, "AddSimpleModem", &())
        .await
        .unwrap();
    let (modem, sim): (String, String) = reply.body().deserialize().unwrap();
    let add = |path: &str, iface: &'static str, name: &'static str, value: Value<'static>| {
        let path = path.to_string();
        async move { mock.add_property(&path, iface, name, value).await.unwrap() }
    };
    add(&modem, MODEM, "Manufacturer", "Sierra Wireless".into()).await;
    add(&modem, MODEM, "EquipmentIdentifier", IMEI.into()).await;
    add(
        &modem,
        MODEM,
        "Bearers",
        Value::from(Vec::<ObjectPath<'static>>::new()),
    )
    .await;
    add(&modem, MODEM_3GPP, "RegistrationState", Value::U32(1)).await;
    add(&sim, SIM, "OperatorIdentifier", "24001".into()).await;
    mock.update_properties(&modem, MODEM, &[("State", Value::I32(8))])
        .await
        .unwrap();
    register(mock, &modem, 1, "24001", "Telia").await;
    modem
}

pub fn stats(rx: u64, tx: u64) -> Value<'static> {
    let map: HashMap<&str, Value<'static>> = [
        ("rx-bytes", Value::U64(rx)),
        ("tx-bytes", Value::U64(tx)),
        ("total-rx-bytes", Value::U64(rx)),
        ("total-tx-bytes", Value::U64(tx)),
        ("duration", Value::U32(60)),
        ("start-date", Value::U64(1_767_225_600)),
    ]
    .into();
    Value::from(map)
}

/// Flips the modem to roaming in Norway with a connected data bearer carrying `rx`/`tx` bytes.
pub async fn roam_to_norway(mock: &Mock, modem: &str, rx: u64, tx: u64) {
    mock.add_object(
        BEARER_PATH,
        BEARER,
        &[("Connected", Value::Bool(true)), ("Stats", stats(rx, tx))],
        &[],
    )
    .await
    .unwrap();
    let bearers = vec![ObjectPath::try_from(BEARER_PATH).unwrap()];
    mock.update_properties(
        modem,
        MODEM,
        &[("Bearers", Value::from(bearers)), ("State", Value::I32(11))],
    )
    .await
    .unwrap();
    register(mock, modem, 5, "24201", "Telenor").await;
}

/// Back home: registered on Telia, bearer disconnected (its totals stay).
pub async fn come_home(mock: &Mock, modem: &str) {
    mock.update_properties(BEARER_PATH, BEARER, &[("Connected", Value::Bool(false))])
        .await
        .unwrap();
    register(mock, modem, 1, "24001", "Telia").await;
}

/// Sets the 3GPP registration (MMModem3gppRegistrationState) and operator in one change.
pub async fn register(mock: &Mock, modem: &str, state: u32, code: &str, name: &str) {
    mock.update_properties(
        modem,
        MODEM_3GPP,
        &[
            ("RegistrationState", Value::U32(state)),
            ("OperatorCode", code.into()),
            ("OperatorName", name.into()),
        ],
    )
    .await
    .unwrap();
}
