//! The zbus edge of the roaming collector: connects to the bus, asks who owns ModemManager's
//! name, lists the modems through its ObjectManager and reads each modem's SIM and bearers with
//! `Properties.GetAll`. Values are turned into [`Prop`]s at once; everything else is pure.
//!
//! Calls go to ModemManager's unique name, never its well-known one: a call to a well-known
//! name would make the bus start (activate) ModemManager on a laptop where it is installed but
//! stopped, and the agent must observe, not change, the machine.

use std::collections::{BTreeMap, HashMap};

use zbus::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::facts::{BEARER_IFACE, MODEM_IFACE, Problem, Prop, Props, RawModem, SIM_IFACE};
use super::{BusAddress, MM_BUS_NAME, MM_PATH, RoamingError};

const DBUS_NAME: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER_IFACE: &str = "org.freedesktop.DBus.ObjectManager";

type ManagedObjects = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>>;

/// What one pass over the bus found.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    pub manager: Option<String>,
    pub modems: Vec<RawModem>,
    /// Objects that could not be read; the rest of the reading stands.
    pub problems: Vec<Problem>,
}

pub(crate) async fn connect(bus: &BusAddress) -> Result<Connection, RoamingError> {
    let err = |source| RoamingError::Connect {
        address: bus.to_string(),
        source: Box::new(source),
    };
    zbus::connection::Builder::address(bus.as_str())
        .map_err(err)?
        .build()
        .await
        .map_err(err)
}

/// True when a call failed because its destination is not (or no longer) on the bus.
fn is_absent(e: &zbus::Error) -> bool {
    matches!(
        zbus::fdo::Error::from(e.clone()),
        zbus::fdo::Error::NameHasNoOwner(_) | zbus::fdo::Error::ServiceUnknown(_)
    )
}

/// ModemManager's unique name, or `None` when nobody owns its well-known name.
pub(crate) async fn manager_owner(conn: &Connection) -> Result<Option<String>, RoamingError> {
    let reply = conn
        .call_method(
            Some(DBUS_NAME),
            DBUS_PATH,
            Some(DBUS_NAME),
            "GetNameOwner",
            &(MM_BUS_NAME,),
        )
        .await;
    match reply {
        Ok(msg) => msg
            .body()
            .deserialize::<String>()
            .map(Some)
            .map_err(|e| RoamingError::bus("GetNameOwner", e)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(RoamingError::bus(
            format!("asking the bus who owns {MM_BUS_NAME}"),
            e,
        )),
    }
}

pub(crate) async fn read(bus: &BusAddress) -> Result<Reading, RoamingError> {
    let conn = connect(bus).await?;
    let Some(owner) = manager_owner(&conn).await? else {
        return Ok(Reading::default());
    };
    let mut reading = Reading {
        manager: Some(owner.clone()),
        ..Reading::default()
    };
    let reply = conn
        .call_method(
            Some(owner.as_str()),
            MM_PATH,
            Some(OBJECT_MANAGER_IFACE),
            "GetManagedObjects",
            &(),
        )
        .await;
    let objects: ManagedObjects = match reply {
        Ok(msg) => msg
            .body()
            .deserialize()
            .map_err(|e| RoamingError::bus(format!("GetManagedObjects on {MM_PATH}"), e))?,
        // ModemManager left between the two calls: the same as not running.
        Err(e) if is_absent(&e) => {
            reading.manager = None;
            return Ok(reading);
        }
        Err(e) => {
            return Err(RoamingError::bus(
                format!("GetManagedObjects on {MM_PATH}"),
                e,
            ));
        }
    };

    let mut paths: Vec<&OwnedObjectPath> = objects
        .iter()
        .filter(|(_, ifaces)| ifaces.contains_key(MODEM_IFACE))
        .map(|(path, _)| path)
        .collect();
    paths.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for path in paths {
        let Some(ifaces) = objects.get(path) else {
            continue;
        };
        let interfaces: BTreeMap<String, Props> = ifaces
            .iter()
            .map(|(name, props)| (name.clone(), to_props(props)))
            .collect();
        let modem_props = interfaces.get(MODEM_IFACE);
        let sim_path = match modem_props.and_then(|p| p.get("Sim")) {
            Some(Prop::Path(p)) if p != "/" && !p.is_empty() => Some(p.clone()),
            _ => None,
        };
        let bearer_paths: Vec<String> = match modem_props.and_then(|p| p.get("Bearers")) {
            Some(Prop::List(items)) => items
                .iter()
                .filter_map(|i| match i {
                    Prop::Path(p) if p != "/" => Some(p.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };

        let mut raw = RawModem {
            path: path.to_string(),
            interfaces,
            sim: None,
            bearers: Vec::new(),
        };
        if let Some(sim_path) = sim_path {
            match get_all(&conn, &owner, &sim_path, SIM_IFACE).await {
                Ok(props) => raw.sim = Some((sim_path, props)),
                Err(message) => reading.problems.push(Problem {
                    path: sim_path,
                    message,
                }),
            }
        }
        for bearer in bearer_paths {
            match get_all(&conn, &owner, &bearer, BEARER_IFACE).await {
                Ok(props) => raw.bearers.push((bearer, props)),
                Err(message) => reading.problems.push(Problem {
                    path: bearer,
                    message,
                }),
            }
        }
        reading.modems.push(raw);
    }
    Ok(reading)
}

async fn get_all(conn: &Connection, owner: &str, path: &str, iface: &str) -> Result<Props, String> {
    let reply = conn
        .call_method(
            Some(owner),
            path,
            Some(PROPERTIES_IFACE),
            "GetAll",
            &(iface,),
        )
        .await
        .map_err(|e| format!("reading {iface}: {e}"))?;
    let props: HashMap<String, OwnedValue> = reply
        .body()
        .deserialize()
        .map_err(|e| format!("reading {iface}: {e}"))?;
    Ok(to_props(&props))
}

fn to_props(props: &HashMap<String, OwnedValue>) -> Props {
    props.iter().map(|(k, v)| (k.clone(), to_prop(v))).collect()
}

/// Folds a D-Bus value into a [`Prop`]. Variants are unwrapped however deeply they nest, since
/// services differ in how many layers they put around `a{sv}` entries.
pub(crate) fn to_prop(v: &Value<'_>) -> Prop {
    match v {
        Value::Bool(b) => Prop::Bool(*b),
        Value::U8(n) => Prop::UInt(u64::from(*n)),
        Value::U16(n) => Prop::UInt(u64::from(*n)),
        Value::U32(n) => Prop::UInt(u64::from(*n)),
        Value::U64(n) => Prop::UInt(*n),
        Value::I16(n) => Prop::Int(i64::from(*n)),
        Value::I32(n) => Prop::Int(i64::from(*n)),
        Value::I64(n) => Prop::Int(*n),
        Value::Str(s) => Prop::Str(s.to_string()),
        Value::ObjectPath(p) => Prop::Path(p.to_string()),
        Value::Value(inner) => to_prop(inner),
        Value::Array(a) => Prop::List(a.inner().iter().map(to_prop).collect()),
        Value::Structure(s) => Prop::List(s.fields().iter().map(to_prop).collect()),
        Value::Dict(d) => Prop::Dict(
            d.iter()
                .filter_map(|(k, v)| match to_prop(k) {
                    Prop::Str(k) | Prop::Path(k) => Some((k, to_prop(v))),
                    _ => None,
                })
                .collect(),
        ),
        other => Prop::Other(other.value_signature().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::zvariant::ObjectPath;

    #[test]
    fn values_fold_into_props() {
        let stats: HashMap<&str, Value<'_>> = [
            ("rx-bytes", Value::U64(7)),
            ("duration", Value::U32(3)),
            ("nested", Value::Value(Box::new(Value::I32(-2)))),
        ]
        .into();
        let got = to_prop(&Value::from(stats));
        let want = Prop::Dict(
            [
                ("rx-bytes".to_string(), Prop::UInt(7)),
                ("duration".to_string(), Prop::UInt(3)),
                ("nested".to_string(), Prop::Int(-2)),
            ]
            .into(),
        );
        assert_eq!(got, want);
        let paths = Value::from(vec![ObjectPath::from_static_str_unchecked("/a/1")]);
        assert_eq!(to_prop(&paths), Prop::List(vec![Prop::Path("/a/1".into())]));
        assert_eq!(to_prop(&Value::F64(1.5)), Prop::Other("d".into()));
        assert_eq!(
            to_prop(&Value::Value(Box::new(Value::Value(Box::new(
                Value::from("x")
            ))))),
            Prop::Str("x".into())
        );
    }
}
