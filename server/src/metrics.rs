//! Prometheus metrics (`vakt-server serve --metrics ADDR`): the figures our own benchmarks care
//! about, in the text format of the official client (`prometheus-client`), on a plain HTTP
//! listener of its own.
//!
//! Two kinds of figure. Events are counted where they happen, with atomics only (reports,
//! enrollments, flush and report durations, command delivery): nothing on the hot path locks or
//! allocates for them. States are read when Prometheus scrapes, so they can never drift from
//! what the store holds (replicas included), and cost nothing between scrapes: agents
//! connected live at every scrape; devices by state, open commands, open findings and mail
//! waiting counted from the store (every device record and finding decoded, off the async
//! workers) at most once per [`STATE_MAX_AGE`]. Scrapes within that window, and scrapes
//! waiting while a count runs, get the last count: so their cost does not grow with the
//! fleet however often, or by however many Prometheus servers, it is scraped. The HELP text
//! of those gauges says how old they may be.

use crate::state::State;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long one count of the store's figures is served: counting decodes every device record
/// and every finding (0.1–0.2 s at 10,000 devices on a quiet machine, up to 0.8 s under load,
/// BENCHMARKS.md "Metrics"), and the figures change on the scale of minutes (a laptop lost, a
/// rule broken), which Prometheus' usual 15–60 s scrapes see a window later at most.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(30);

/// A gauge's HELP with how old its value may be.
fn counted_help(what: &str) -> String {
    format!(
        "{what} (counted from the store at most every {} s; up to that old)",
        STATE_MAX_AGE.as_secs()
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabel {
    rule: String,
    severity: String,
}

/// Buckets from 1 ms to about 33 s: a check-in answers in milliseconds, a saturated flush or a
/// lock to a laptop on a slow link in seconds.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

/// Buckets from 1 s to about 9 days: a lock reaches a connected laptop in a second, a lost one
/// that stays off in days.
fn delivery_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 4.0, 11)
}

/// Every metric the server exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Acknowledged reports by kind: `check-in` (digests only) or `sections`.
    pub reports: Family<KindLabel, Counter>,
    /// From a report's arrival to its acknowledgement.
    pub report_duration: Histogram,
    /// Enrollments by result: `enrolled`, `refused`, `error`.
    pub enrollments: Family<ResultLabel, Counter>,
    /// From a command's request to its final result.
    pub command_delivery: Histogram,
    agents_connected: Gauge,
    devices: Family<StateLabel, Gauge>,
    commands: Family<CommandLabel, Gauge>,
    findings_open: Family<FindingLabel, Gauge>,
    outbox_pending: Gauge,
    /// When the store's figures were last counted. Held by one scrape at a time, so two never
    /// interleave their counts and a scrape that waited for a count uses it.
    counted: tokio::sync::Mutex<Option<Instant>>,
}

impl Metrics {
    /// The metrics, with the store's flush histogram (kept by the group commit) among them.
    pub fn new(flush_duration: Histogram) -> Self {
        let mut registry = Registry::default();
        let reports = Family::<KindLabel, Counter>::default();
        registry.register(
            "vakt_reports",
            "Agent reports acknowledged, by kind (check-in: digests only; sections: with changed sections)",
            reports.clone(),
        );
        let report_duration = Histogram::new(seconds_buckets());
        registry.register(
            "vakt_report_duration_seconds",
            "From a report's arrival to its acknowledgement (durable)",
            report_duration.clone(),
        );
        registry.register(
            "vakt_store_flush_duration_seconds",
            "How long one group flush of the store took",
            flush_duration,
        );
        let enrollments = Family::<ResultLabel, Counter>::default();
        registry.register(
            "vakt_enrollments",
            "Enrollment attempts, by result (enrolled, refused, error)",
            enrollments.clone(),
        );
        let command_delivery = Histogram::new(delivery_buckets());
        registry.register(
            "vakt_command_delivery_seconds",
            "From a command's request to the agent's final result",
            command_delivery.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "vakt_agents_connected",
            "Agents holding their command stream now",
            agents_connected.clone(),
        );
        let devices = Family::<StateLabel, Gauge>::default();
        registry.register(
            "vakt_devices",
            counted_help("Enrolled devices, by state"),
            devices.clone(),
        );
        let commands = Family::<CommandLabel, Gauge>::default();
        registry.register(
            "vakt_commands",
            counted_help(
                "Open commands (awaiting approval, pending, delivered), by kind and state",
            ),
            commands.clone(),
        );
        let findings_open = Family::<FindingLabel, Gauge>::default();
        registry.register(
            "vakt_findings_open",
            counted_help("Open findings, by rule and severity"),
            findings_open.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "vakt_outbox_pending",
            counted_help("Notifications queued and not yet delivered"),
            outbox_pending.clone(),
        );
        registry.register(
            "vakt_build",
            "The server's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            reports,
            report_duration,
            enrollments,
            command_delivery,
            agents_connected,
            devices,
            commands,
            findings_open,
            outbox_pending,
            counted: tokio::sync::Mutex::new(None),
        }
    }

    /// Counts an acknowledged report.
    pub fn report_acknowledged(&self, with_sections: bool, took: std::time::Duration) {
        let kind = if with_sections {
            "sections"
        } else {
            "check-in"
        };
        self.reports
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
        self.report_duration.observe(took.as_secs_f64());
    }

    /// Counts an enrollment's outcome from the answer it got.
    pub fn enrollment(&self, status: Option<tonic::Code>) {
        let result = match status {
            None => "enrolled",
            Some(
                tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
                | tonic::Code::ResourceExhausted,
            ) => "refused",
            Some(_) => "error",
        };
        self.enrollments
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// The text Prometheus scrapes: agents connected now, the store's figures as of the last
    /// count (made now if it is older than [`STATE_MAX_AGE`]).
    pub async fn render(&self, state: &State) -> Result<String, MetricsError> {
        self.render_at(state, Instant::now()).await
    }

    /// [`render`](Self::render) as if it were `now` (tests and the bench move the clock).
    pub async fn render_at(&self, state: &State, now: Instant) -> Result<String, MetricsError> {
        let mut counted = self.counted.lock().await;
        let connected = state.connected.lock().map(|m| m.len()).unwrap_or(0);
        self.agents_connected.set(gauge(connected));
        let fresh = counted.is_some_and(|at| now.saturating_duration_since(at) < STATE_MAX_AGE);
        if !fresh {
            let store = state.store.clone();
            // Seconds of decoding at a large fleet: not on an async worker, where it would
            // hold up the agents' check-ins queued behind it.
            let counts = tokio::task::spawn_blocking(move || StateCounts::read(&store))
                .await
                .map_err(|e| MetricsError::Count(e.to_string()))??;
            self.set_counts(counts);
            *counted = Some(now);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn set_counts(&self, c: StateCounts) {
        self.devices.clear();
        for (s, n) in c.devices {
            self.devices
                .get_or_create(&StateLabel { state: s.into() })
                .set(gauge(n));
        }
        self.commands.clear();
        for ((kind, s), n) in c.commands {
            self.commands
                .get_or_create(&CommandLabel {
                    kind: kind.into(),
                    state: s.into(),
                })
                .set(gauge(n));
        }
        self.findings_open.clear();
        for ((rule, severity), n) in c.findings {
            self.findings_open
                .get_or_create(&FindingLabel {
                    rule,
                    severity: severity.into(),
                })
                .set(gauge(n));
        }
        self.outbox_pending.set(gauge(c.outbox));
    }
}

/// One count of the store's figures.
struct StateCounts {
    devices: HashMap<&'static str, usize>,
    commands: HashMap<(&'static str, &'static str), usize>,
    findings: HashMap<(String, &'static str), usize>,
    outbox: usize,
}

impl StateCounts {
    /// Reads every device record, open command and finding: blocking, and the cost of a
    /// scrape that [`STATE_MAX_AGE`] bounds.
    fn read(store: &crate::store::Store) -> Result<Self, crate::store::StoreError> {
        let mut devices: HashMap<&'static str, usize> = HashMap::new();
        for rec in store.devices()? {
            if let Some(d) = rec.device {
                *devices
                    .entry(crate::state::device_state_name(d.state))
                    .or_default() += 1;
            }
        }
        let mut commands: HashMap<(&'static str, &'static str), usize> = HashMap::new();
        for c in store.open_commands()? {
            *commands
                .entry((
                    crate::commands::kind_name(c.kind),
                    crate::commands::state_name(c.state),
                ))
                .or_default() += 1;
        }
        let mut findings: HashMap<(String, &'static str), usize> = HashMap::new();
        let all: Vec<crate::policy::Finding> =
            store.json_list(crate::store::JsonTree::Findings, b"")?;
        for f in all
            .into_iter()
            .filter(|f| f.status == crate::policy::FindingStatus::Open)
        {
            *findings.entry((f.rule, f.severity.as_str())).or_default() += 1;
        }
        Ok(Self {
            devices,
            commands,
            findings,
            outbox: store.json_count(crate::store::JsonTree::Outbox)?,
        })
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("encoding the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
    #[error("counting the store's figures: {0}")]
    Count(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{laptop_report, seed_device};

    #[tokio::test]
    async fn the_store_is_counted_at_most_once_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::server::prepare(dir.path(), &[], crate::notify::NotifyConfig::default())
            .await
            .unwrap();
        let t0 = Instant::now();
        let text = state.metrics.render_at(&state, t0).await.unwrap();
        assert!(!text.contains("vakt_devices{"), "{text}");
        assert!(
            text.contains(
                "# HELP vakt_outbox_pending Notifications queued and not yet delivered \
                 (counted from the store at most every 30 s"
            ),
            "the HELP says how old: {text}"
        );
        seed_device(&state, "lap-1", &laptop_report()).await;
        let within = t0 + STATE_MAX_AGE - Duration::from_millis(1);
        let text = state.metrics.render_at(&state, within).await.unwrap();
        assert!(
            !text.contains("vakt_devices{"),
            "within the window, the last count: {text}"
        );
        let text = state
            .metrics
            .render_at(&state, t0 + STATE_MAX_AGE)
            .await
            .unwrap();
        assert!(text.contains("vakt_devices{state=\"active\"} 1"), "{text}");
        // Scrapes that wait while a count runs use it (a clock behind the count is fresh).
        let text = state.metrics.render_at(&state, t0).await.unwrap();
        assert!(text.contains("vakt_devices{state=\"active\"} 1"), "{text}");
    }
}
