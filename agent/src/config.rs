//! The agent's configuration file (TOML, `/etc/vakt/agent.toml` when installed).
//!
//! Unknown keys and bad values are errors that name the file, the line and the key: a typo in a
//! config pushed to hundreds of laptops must fail loudly, not fall back to a default.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How the agent locks the device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMethod {
    Logind,
    Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    pub method: LockMethod,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub unlock_command: Vec<String>,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            method: LockMethod::Logind,
            command: Vec::new(),
            unlock_command: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WipeStrategy {
    LuksErase,
    Paths,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WipeConfig {
    pub strategy: WipeStrategy,
    /// `luks-erase`: the LUKS block devices whose key slots are erased.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// `paths`: what is removed (never crossing into another file system).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// `luks-erase`: copies of the LUKS headers (made with luksHeaderBackup) to destroy too.
    #[serde(default)]
    pub header_backups: Vec<PathBuf>,
    /// Power off after a wipe (default true; tests turn it off).
    #[serde(default = "yes")]
    pub poweroff: bool,
}

fn yes() -> bool {
    true
}

impl WipeConfig {
    /// What the server is told of this configuration (the strategy and the devices, never the
    /// paths: they name people's files).
    pub fn plan(&self) -> vakt_proto::model::WipePlan {
        use vakt_proto::model::{WipePlan, WipeStrategy as S};
        WipePlan {
            strategy: match self.strategy {
                WipeStrategy::LuksErase => S::LuksErase,
                WipeStrategy::Paths => S::Paths,
            },
            devices: self
                .devices
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
        }
    }
}

impl Default for WipeConfig {
    fn default() -> Self {
        Self {
            strategy: WipeStrategy::LuksErase,
            devices: Vec::new(),
            paths: Vec::new(),
            header_backups: Vec::new(),
            poweroff: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    server: OneOrMany,
    ca: PathBuf,
    state_dir: PathBuf,
    enroll_token_file: Option<PathBuf>,
    report_interval: Option<String>,
    root: Option<PathBuf>,
    system_bus: Option<String>,
    #[serde(default)]
    home_mccs: Vec<String>,
    lock: Option<LockConfig>,
    wipe: Option<WipeConfig>,
    collect: Option<RawCollect>,
}

/// `server`: one URL, or a list of them (the replicas of one installation).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[collect]`: how long collection may take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollect {
    family_timeout: Option<String>,
    total_timeout: Option<String>,
}

/// A validated agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `server`: the URLs of the installation's servers, at least one; the agent starts with
    /// one of its own choosing and moves on when it fails (`link::Servers`).
    pub servers: Vec<String>,
    pub ca: PathBuf,
    pub state_dir: PathBuf,
    pub enroll_token_file: Option<PathBuf>,
    pub report_interval: Duration,
    pub root: PathBuf,
    pub system_bus: Option<String>,
    /// Mobile country codes that count as home; empty: each SIM's own country.
    pub home_mccs: Vec<String>,
    pub lock: LockConfig,
    pub wipe: WipeConfig,
    /// `[collect]` `family_timeout` and `total_timeout`: each fact family's deadline and the
    /// whole collection's.
    pub collect_budgets: crate::collect::family::Budgets,
}

/// The shortest report interval accepted: more often than this only loads the server.
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// The longest report interval accepted: a laptop silent for longer is not managed, and a
/// duration of centuries (which humantime reads) would overflow the timers built from it.
pub const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest collection budget accepted (`collect.family_timeout`, `total_timeout`), for
/// the same reasons; a collection that needs more is stuck.
pub const MAX_COLLECT_BUDGET: Duration = Duration::from_secs(3600);

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and validates the text of a config file; the error is a message for a person.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let servers = match raw.server {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(list) => list,
        };
        if servers.is_empty() {
            return Err("server: the list is empty; give at least one https:// URL".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &servers {
            if !s.starts_with("https://") {
                return Err(format!(
                    "server: '{s}' must be an https:// URL (agents only talk TLS)"
                ));
            }
            if !seen.insert(s.trim_end_matches('/')) {
                return Err(format!("server: '{s}' is listed twice"));
            }
        }
        let report_interval = match &raw.report_interval {
            None => DEFAULT_REPORT_INTERVAL,
            Some(s) => {
                let d = humantime::parse_duration(s).map_err(|e| {
                    format!("report_interval: '{s}' is not a duration ({e}); write e.g. \"15m\"")
                })?;
                if d < MIN_REPORT_INTERVAL {
                    return Err(format!(
                        "report_interval: '{s}' is shorter than the minimum of {}s",
                        MIN_REPORT_INTERVAL.as_secs()
                    ));
                }
                if d > MAX_REPORT_INTERVAL {
                    return Err(format!(
                        "report_interval: '{s}' is longer than the maximum of {}",
                        humantime::format_duration(MAX_REPORT_INTERVAL)
                    ));
                }
                d
            }
        };
        if let Err(e) = crate::collect::roaming::HomeMccs::new(raw.home_mccs.iter()) {
            return Err(format!("home_mccs: {e}"));
        }
        let lock = raw.lock.unwrap_or_default();
        if lock.method == LockMethod::Command && lock.command.is_empty() {
            return Err(
                "lock: method = \"command\" needs command = [\"/path/to/program\", ...]".into(),
            );
        }
        let wipe = raw.wipe.unwrap_or_default();
        if wipe.strategy == WipeStrategy::Paths && wipe.paths.is_empty() {
            return Err("wipe: strategy = \"paths\" needs paths = [...]".into());
        }
        let mut collect_budgets = crate::collect::family::Budgets::default();
        if let Some(c) = &raw.collect {
            let budget = |key: &str, v: &Option<String>, default| match v {
                None => Ok(default),
                Some(s) => match humantime::parse_duration(s) {
                    Ok(d) if d > MAX_COLLECT_BUDGET => Err(format!(
                        "collect.{key}: '{s}' is longer than the maximum of {}",
                        humantime::format_duration(MAX_COLLECT_BUDGET)
                    )),
                    Ok(d) if d >= Duration::from_secs(1) => Ok(d),
                    Ok(_) => Err(format!("collect.{key}: '{s}' is shorter than 1s")),
                    Err(e) => Err(format!(
                        "collect.{key}: '{s}' is not a duration ({e}); write e.g. \"60s\""
                    )),
                },
            };
            collect_budgets.family =
                budget("family_timeout", &c.family_timeout, collect_budgets.family)?;
            collect_budgets.total =
                budget("total_timeout", &c.total_timeout, collect_budgets.total)?;
        }
        if let Some(bus) = &raw.system_bus
            && !bus.contains(':')
        {
            return Err(format!(
                "system_bus: '{bus}' is not a D-Bus address (e.g. \"unix:path=/run/dbus/system_bus_socket\")"
            ));
        }
        Ok(Self {
            servers: servers
                .iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            ca: raw.ca,
            state_dir: raw.state_dir,
            enroll_token_file: raw.enroll_token_file,
            report_interval,
            root: raw.root.unwrap_or_else(|| PathBuf::from("/")),
            system_bus: raw.system_bus,
            home_mccs: raw.home_mccs,
            lock,
            wipe,
            collect_budgets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
server = "https://vakt.example.org:7443"
ca = "/etc/vakt/ca.pem"
state_dir = "/var/lib/vakt"
enroll_token_file = "/etc/vakt/enroll.token"
report_interval = "15m"
[lock]
method = "logind"
[wipe]
strategy = "luks-erase"
"#;

    #[test]
    fn interface_example_parses() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.report_interval, Duration::from_secs(900));
        assert_eq!(c.root, PathBuf::from("/"));
        assert_eq!(c.lock.method, LockMethod::Logind);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::parse(&format!("{GOOD}\n[lock]\n")).unwrap_err();
        assert!(err.contains("line"), "{err}");
        let err = Config::parse(&GOOD.replace("report_interval", "report_intervall")).unwrap_err();
        assert!(
            err.contains("report_intervall") && err.contains("line 6"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse(&GOOD.replace("\"15m\"", "\"soon\"")).unwrap_err();
        assert!(err.starts_with("report_interval: 'soon'"), "{err}");
        let err = Config::parse(&GOOD.replace("https://", "http://")).unwrap_err();
        assert!(err.starts_with("server:"), "{err}");
        let err = Config::parse(&GOOD.replace("\"logind\"", "\"command\"")).unwrap_err();
        assert!(err.starts_with("lock:"), "{err}");
        let err = Config::parse(&GOOD.replace("\"logind\"", "\"magic\"")).unwrap_err();
        assert!(err.contains("magic"), "{err}");
        let err =
            Config::parse(&format!("{GOOD}[collect]\nfamily_timeout = \"soon\"\n")).unwrap_err();
        assert!(err.starts_with("collect.family_timeout: 'soon'"), "{err}");
        let err = Config::parse(&format!("{GOOD}[collect]\nfamily_timeot = \"5s\"\n")).unwrap_err();
        assert!(err.contains("family_timeot"), "{err}");
        // Centuries parse as durations and overflowed the agent's timers once it ran.
        let err = Config::parse(&GOOD.replace("\"15m\"", "\"18000000000000000000s\"")).unwrap_err();
        assert!(err.contains("longer than the maximum of 7days"), "{err}");
        assert!(Config::parse(&GOOD.replace("\"15m\"", "\"7days\"")).is_ok());
        let err = Config::parse(&format!("{GOOD}[collect]\ntotal_timeout = \"1000years\"\n"))
            .unwrap_err();
        assert!(
            err.starts_with("collect.total_timeout: '1000years' is longer than the maximum of 1h"),
            "{err}"
        );
    }

    #[test]
    fn server_is_one_url_or_a_list() {
        let one = Config::parse(GOOD).unwrap();
        assert_eq!(one.servers, ["https://vakt.example.org:7443"]);
        let two = GOOD.replace(
            "server = \"https://vakt.example.org:7443\"",
            "server = [\"https://a.example.org:7443/\", \"https://b.example.org:7443\"]",
        );
        assert_eq!(
            Config::parse(&two).unwrap().servers,
            ["https://a.example.org:7443", "https://b.example.org:7443"]
        );
        let err =
            Config::parse(&GOOD.replace("\"https://vakt.example.org:7443\"", "[]")).unwrap_err();
        assert!(err.starts_with("server: the list is empty"), "{err}");
        let err = Config::parse(&two.replace("https://b", "http://b")).unwrap_err();
        assert!(err.starts_with("server: 'http://b"), "{err}");
        let err = Config::parse(&two.replace("https://b", "https://a")).unwrap_err();
        assert!(err.contains("listed twice"), "{err}");
        let err =
            Config::parse(&GOOD.replace("\"https://vakt.example.org:7443\"", "7443")).unwrap_err();
        assert!(err.contains("server"), "{err}");
    }

    #[test]
    fn collection_budgets_default_and_parse() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(
            c.collect_budgets,
            crate::collect::family::Budgets::default()
        );
        let c = Config::parse(&format!(
            "{GOOD}[collect]\nfamily_timeout = \"20s\"\ntotal_timeout = \"30s\"\n"
        ))
        .unwrap();
        assert_eq!(c.collect_budgets.family, Duration::from_secs(20));
        assert_eq!(c.collect_budgets.total, Duration::from_secs(30));
    }
}
