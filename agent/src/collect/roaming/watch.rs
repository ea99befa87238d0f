//! Change notifications: the agent reports within seconds when a modem registers somewhere else,
//! a data bearer connects or drops, a modem comes or goes, or ModemManager starts or stops.
//!
//! [`watch()`] subscribes, on its own bus connection, to
//! - every signal ModemManager's name sends (`PropertiesChanged` of modems, SIMs and bearers,
//!   which live outside the ObjectManager's tree; `InterfacesAdded`/`InterfacesRemoved` of the
//!   ObjectManager at [`MM_PATH`]),
//! - `NameOwnerChanged` for ModemManager's name (it appearing, disappearing or restarting).
//!
//! Only changes that matter to the report wake the daemon (see `relevant`): bearer `Stats`, signal
//! quality and the like change every few seconds and are left to the regular report.
//!
//! Notifications are debounced: a burst (registration, operator and state change together when
//! crossing a border) becomes one [`Change`] after [`QUIET`] without further events, and never
//! later than [`MAX_DELAY`] after the first. A notification means "collect again now"; it carries
//! no state, so the daemon always reads the final state. At most one notification waits in the
//! channel: while one is pending, later events are already covered by it, because the collection
//! it triggers starts after them. An event that lands while that collection runs queues a new one.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{MatchRule, Message, MessageStream};

use super::facts::{BEARER_IFACE, MODEM_3GPP_IFACE, MODEM_IFACE, SIM_IFACE};
use super::{BusAddress, MM_BUS_NAME, MM_PATH, RoamingError, client};

/// How long the bus must stay quiet before a burst of events becomes one notification.
pub const QUIET: Duration = Duration::from_millis(300);
/// The longest a notification waits after the first event of a burst, however busy the bus.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Reasons kept per notification (for logs); the rest are counted.
const MAX_REASONS: usize = 16;

/// Something relevant changed; collect again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed, for logs: `Modem3gpp.RegistrationState on /org/.../Modem/0`, and so on.
    pub reasons: Vec<String>,
}

/// Receives [`Change`]s until the bus connection ends. Dropping it stops the watch.
pub struct Watcher {
    rx: mpsc::Receiver<Change>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// The next change. `None` when the bus connection is gone: the daemon should collect (the
    /// state may have changed unseen) and call [`watch()`] again after a pause.
    pub async fn changed(&mut self) -> Option<Change> {
        self.rx.recv().await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bus_err(what: &str) -> impl FnOnce(zbus::Error) -> RoamingError + '_ {
    move |source| RoamingError::bus(what, source)
}

/// Subscribes to ModemManager's changes on `bus`. The subscriptions are in place when this
/// returns, so a collection started afterwards cannot miss a change.
pub async fn watch(bus: &BusAddress) -> Result<Watcher, RoamingError> {
    let conn = client::connect(bus).await?;
    let from_mm = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(MM_BUS_NAME)
        .map_err(bus_err("match rule"))?
        .build();
    let owner = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .and_then(|b| b.interface("org.freedesktop.DBus"))
        .and_then(|b| b.member("NameOwnerChanged"))
        .and_then(|b| b.arg(0, MM_BUS_NAME))
        .map_err(bus_err("match rule"))?
        .build();
    let a = MessageStream::for_match_rule(from_mm, &conn, Some(256))
        .await
        .map_err(bus_err("subscribing to ModemManager's signals"))?;
    let b = MessageStream::for_match_rule(owner, &conn, Some(16))
        .await
        .map_err(bus_err("subscribing to NameOwnerChanged"))?;
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(run(conn, a.merge(b), tx));
    Ok(Watcher { rx, task })
}

async fn run<S>(conn: zbus::Connection, mut stream: S, tx: mpsc::Sender<Change>)
where
    S: tokio_stream::Stream<Item = zbus::Result<Message>> + Unpin,
{
    // Keeps the connection (and so the subscriptions) alive as long as the task runs.
    let _conn = conn;
    let mut burst = Debouncer::default();
    loop {
        let due = burst.due();
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(msg)) => {
                    if let Some(reason) = decode(&msg).as_ref().and_then(relevant) {
                        burst.push(reason, Instant::now());
                    }
                }
                Some(Err(_)) => {}
                None => break,
            },
            () = sleep_until(due), if due.is_some() => {
                if let Some(change) = burst.take() {
                    match tx.try_send(change) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
        }
    }
    // The bus went away: a last notification for whatever was pending, then the channel closes.
    if let Some(change) = burst.take() {
        let _ = tx.try_send(change);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Collects a burst of events and says when it is due.
#[derive(Debug, Default)]
pub(crate) struct Debouncer {
    first: Option<Instant>,
    last: Option<Instant>,
    reasons: Vec<String>,
    more: usize,
}

impl Debouncer {
    pub(crate) fn push(&mut self, reason: String, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        if self.reasons.contains(&reason) {
            return;
        }
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(reason);
        } else {
            self.more += 1;
        }
    }

    /// When the pending burst should be sent; `None` when nothing is pending.
    pub(crate) fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + QUIET).min(first + MAX_DELAY))
    }

    pub(crate) fn take(&mut self) -> Option<Change> {
        self.first?;
        let mut reasons = std::mem::take(&mut self.reasons);
        if self.more > 0 {
            reasons.push(format!("and {} more", self.more));
        }
        *self = Self::default();
        Some(Change { reasons })
    }
}

/// The signals [`relevant`] judges, decoded from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    PropertiesChanged {
        path: String,
        interface: String,
        /// Changed and invalidated property names alike.
        names: Vec<String>,
    },
    /// `InterfacesAdded` or `InterfacesRemoved` sent from `manager` about `object`.
    Interfaces {
        manager: String,
        object: String,
        interfaces: Vec<String>,
        added: bool,
    },
    NameOwnerChanged {
        name: String,
        old: String,
        new: String,
    },
}

fn decode(msg: &Message) -> Option<Signal> {
    let header = msg.header();
    if msg.message_type() != MessageType::Signal {
        return None;
    }
    let path = header.path().map(|p| p.to_string()).unwrap_or_default();
    let interface = header.interface()?.to_string();
    let member = header.member()?.to_string();
    let body = msg.body();
    match (interface.as_str(), member.as_str()) {
        ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
            let (iface, changed, invalidated): (String, HashMap<String, OwnedValue>, Vec<String>) =
                body.deserialize().ok()?;
            let mut names: Vec<String> = changed.into_keys().chain(invalidated).collect();
            names.sort();
            Some(Signal::PropertiesChanged {
                path,
                interface: iface,
                names,
            })
        }
        ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") => {
            type Added = (
                OwnedObjectPath,
                HashMap<String, HashMap<String, OwnedValue>>,
            );
            let (object, ifaces): Added = body.deserialize().ok()?;
            let mut interfaces: Vec<String> = ifaces.into_keys().collect();
            interfaces.sort();
            Some(Signal::Interfaces {
                manager: path,
                object: object.to_string(),
                interfaces,
                added: true,
            })
        }
        ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
            let (object, interfaces): (OwnedObjectPath, Vec<String>) = body.deserialize().ok()?;
            Some(Signal::Interfaces {
                manager: path,
                object: object.to_string(),
                interfaces,
                added: false,
            })
        }
        ("org.freedesktop.DBus", "NameOwnerChanged") => {
            let (name, old, new): (String, String, String) = body.deserialize().ok()?;
            Some(Signal::NameOwnerChanged { name, old, new })
        }
        _ => None,
    }
}

/// Properties whose change the report must show at once, per interface.
fn watched(interface: &str) -> &'static [&'static str] {
    match interface {
        MODEM_IFACE => &["State", "Sim", "Bearers"],
        MODEM_3GPP_IFACE => &["RegistrationState", "OperatorCode"],
        BEARER_IFACE => &["Connected"],
        SIM_IFACE => &["OperatorIdentifier", "Imsi"],
        _ => &[],
    }
}

/// Whether a signal should wake the daemon, and why.
pub(crate) fn relevant(signal: &Signal) -> Option<String> {
    match signal {
        Signal::PropertiesChanged {
            path,
            interface,
            names,
        } => {
            let watched = watched(interface);
            let hits: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| watched.contains(n))
                .collect();
            if hits.is_empty() {
                return None;
            }
            let short = interface.rsplit('.').next().unwrap_or(interface);
            Some(format!("{short}.{} on {path}", hits.join(",")))
        }
        Signal::Interfaces {
            manager,
            object,
            interfaces,
            added,
        } => {
            let ours = interfaces.iter().any(|i| i.starts_with(MM_BUS_NAME));
            if manager != MM_PATH || !ours {
                return None;
            }
            Some(format!(
                "{object} {}",
                if *added { "added" } else { "removed" }
            ))
        }
        Signal::NameOwnerChanged { name, old, new } => {
            if name != MM_BUS_NAME {
                return None;
            }
            let what = match (old.is_empty(), new.is_empty()) {
                (true, false) => "started",
                (false, true) => "stopped",
                (false, false) => "restarted",
                (true, true) => return None,
            };
            Some(format!("ModemManager {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(interface: &str, names: &[&str]) -> Signal {
        Signal::PropertiesChanged {
            path: "/org/freedesktop/ModemManager1/Modem/0".into(),
            interface: interface.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn relevance_table() {
        let cases: Vec<(Signal, Option<&str>)> = vec![
            (
                props(
                    MODEM_3GPP_IFACE,
                    &["OperatorCode", "OperatorName", "RegistrationState"],
                ),
                Some(
                    "Modem3gpp.OperatorCode,RegistrationState on /org/freedesktop/ModemManager1/Modem/0",
                ),
            ),
            (props(MODEM_3GPP_IFACE, &["OperatorName"]), None),
            (props(MODEM_IFACE, &["SignalQuality"]), None),
            (
                props(MODEM_IFACE, &["State"]),
                Some("Modem.State on /org/freedesktop/ModemManager1/Modem/0"),
            ),
            (
                props(MODEM_IFACE, &["Bearers"]),
                Some("Modem.Bearers on /org/freedesktop/ModemManager1/Modem/0"),
            ),
            (props(BEARER_IFACE, &["Stats"]), None),
            (
                props(BEARER_IFACE, &["Connected", "Stats"]),
                Some("Bearer.Connected on /org/freedesktop/ModemManager1/Modem/0"),
            ),
            (
                props(SIM_IFACE, &["OperatorIdentifier"]),
                Some("Sim.OperatorIdentifier on /org/freedesktop/ModemManager1/Modem/0"),
            ),
            (
                props("org.freedesktop.NetworkManager.Device", &["State"]),
                None,
            ),
            (
                Signal::Interfaces {
                    manager: MM_PATH.into(),
                    object: "/org/freedesktop/ModemManager1/Modem/1".into(),
                    interfaces: vec![MODEM_IFACE.into(), MODEM_3GPP_IFACE.into()],
                    added: true,
                },
                Some("/org/freedesktop/ModemManager1/Modem/1 added"),
            ),
            (
                Signal::Interfaces {
                    manager: MM_PATH.into(),
                    object: "/org/freedesktop/ModemManager1/Modem/1".into(),
                    interfaces: vec![MODEM_IFACE.into()],
                    added: false,
                },
                Some("/org/freedesktop/ModemManager1/Modem/1 removed"),
            ),
            (
                Signal::Interfaces {
                    manager: "/org/bluez".into(),
                    object: "/org/bluez/hci0".into(),
                    interfaces: vec!["org.bluez.Adapter1".into()],
                    added: true,
                },
                None,
            ),
            (
                Signal::NameOwnerChanged {
                    name: MM_BUS_NAME.into(),
                    old: "".into(),
                    new: ":1.5".into(),
                },
                Some("ModemManager started"),
            ),
            (
                Signal::NameOwnerChanged {
                    name: MM_BUS_NAME.into(),
                    old: ":1.5".into(),
                    new: "".into(),
                },
                Some("ModemManager stopped"),
            ),
            (
                Signal::NameOwnerChanged {
                    name: MM_BUS_NAME.into(),
                    old: ":1.5".into(),
                    new: ":1.9".into(),
                },
                Some("ModemManager restarted"),
            ),
            (
                Signal::NameOwnerChanged {
                    name: "org.freedesktop.login1".into(),
                    old: "".into(),
                    new: ":1.2".into(),
                },
                None,
            ),
        ];
        for (signal, want) in cases {
            assert_eq!(relevant(&signal).as_deref(), want, "{signal:?}");
        }
    }

    #[test]
    fn debouncer_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        assert_eq!(d.due(), None);
        assert_eq!(d.take(), None);

        d.push("a".into(), t0);
        assert_eq!(d.due(), Some(t0 + QUIET));
        d.push("b".into(), t0 + Duration::from_millis(200));
        d.push("a".into(), t0 + Duration::from_millis(250));
        assert_eq!(d.due(), Some(t0 + Duration::from_millis(250) + QUIET));
        // A steady trickle of events cannot push the notification past MAX_DELAY.
        for ms in (300..3000).step_by(100) {
            d.push("c".into(), t0 + Duration::from_millis(ms));
        }
        assert_eq!(d.due(), Some(t0 + MAX_DELAY));
        let change = d.take().unwrap();
        assert_eq!(change.reasons, ["a", "b", "c"]);
        assert_eq!(d.due(), None, "taking resets the burst");

        for i in 0..(MAX_REASONS + 3) {
            d.push(format!("r{i}"), t0);
        }
        let change = d.take().unwrap();
        assert_eq!(change.reasons.len(), MAX_REASONS + 1);
        assert_eq!(change.reasons.last().unwrap(), "and 3 more");
    }
}
