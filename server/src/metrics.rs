//! Prometheus metrics (`vakt-server serve --metrics ADDR`): the figures our own benchmarks care
//! about, in the text format of the official client (`prometheus-client`), on a plain HTTP
//! listener of its own.
//!
//! Two kinds of figure. Events are counted where they happen, with atomics only (reports,
//! enrollments, flush and report durations, command delivery): nothing on the hot path locks or
//! allocates for them. States (agents connected, devices by state, open commands, open
//! findings, mail waiting) are read from the store when Prometheus scrapes, so they can never
//! drift from what the store holds, and cost nothing between scrapes.

use crate::state::State;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::HashMap;

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
    /// One scrape at a time refreshes the state gauges, so two never interleave their counts.
    scrape: tokio::sync::Mutex<()>,
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
            "Enrolled devices, by state",
            devices.clone(),
        );
        let commands = Family::<CommandLabel, Gauge>::default();
        registry.register(
            "vakt_commands",
            "Open commands (awaiting approval, pending, delivered), by kind and state",
            commands.clone(),
        );
        let findings_open = Family::<FindingLabel, Gauge>::default();
        registry.register(
            "vakt_findings_open",
            "Open findings, by rule and severity",
            findings_open.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "vakt_outbox_pending",
            "Notifications queued and not yet delivered",
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
            scrape: tokio::sync::Mutex::new(()),
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

    /// The text Prometheus scrapes, with the state gauges read from the store now.
    pub async fn render(&self, state: &State) -> Result<String, MetricsError> {
        let _one = self.scrape.lock().await;
        let connected = state.connected.lock().map(|m| m.len()).unwrap_or(0);
        self.agents_connected.set(gauge(connected));

        let mut devices: HashMap<&'static str, usize> = HashMap::new();
        for rec in state.store.devices()? {
            if let Some(d) = rec.device {
                *devices
                    .entry(crate::state::device_state_name(d.state))
                    .or_default() += 1;
            }
        }
        self.devices.clear();
        for (s, n) in devices {
            self.devices
                .get_or_create(&StateLabel { state: s.into() })
                .set(gauge(n));
        }

        let mut commands: HashMap<(&'static str, &'static str), usize> = HashMap::new();
        for c in state.store.open_commands()? {
            *commands
                .entry((
                    crate::commands::kind_name(c.kind),
                    crate::commands::state_name(c.state),
                ))
                .or_default() += 1;
        }
        self.commands.clear();
        for ((kind, s), n) in commands {
            self.commands
                .get_or_create(&CommandLabel {
                    kind: kind.into(),
                    state: s.into(),
                })
                .set(gauge(n));
        }

        let mut findings: HashMap<(String, &'static str), usize> = HashMap::new();
        let all: Vec<crate::policy::Finding> = state
            .store
            .json_list(crate::store::JsonTree::Findings, b"")?;
        for f in all
            .into_iter()
            .filter(|f| f.status == crate::policy::FindingStatus::Open)
        {
            *findings.entry((f.rule, f.severity.as_str())).or_default() += 1;
        }
        self.findings_open.clear();
        for ((rule, severity), n) in findings {
            self.findings_open
                .get_or_create(&FindingLabel {
                    rule,
                    severity: severity.into(),
                })
                .set(gauge(n));
        }

        self.outbox_pending.set(gauge(
            state.store.json_count(crate::store::JsonTree::Outbox)?,
        ));

        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
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
}
