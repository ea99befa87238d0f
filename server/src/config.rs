//! The server's configuration file (TOML, `/etc/vakt/server.toml` when installed) and how it
//! combines with `vakt-server serve`'s flags.
//!
//! The file holds what the service needs to start: `data`, `listen`, `console`, `hostnames`,
//! and `store` (a PostgreSQL URL) when the store is not the embedded one; `console` is an
//! address, or a `[console]` table with `listen` and the single sign-on settings
//! (`[console.oidc]`, [`OidcFile`]). Flags given on the command line override the file, so `serve --data DIR` keeps
//! working without any file, and an operator can try a different port without editing it.
//! Unknown keys and bad values are errors that name the file, the line and the key, as in the
//! agent's config: a typo must stop the service, not quietly fall back to a default.

use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where agents and the admin API connect when neither a flag nor the file says.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7443);
/// The web console's address when neither a flag nor the file says.
pub const DEFAULT_CONSOLE: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7480);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "no data directory: pass --data DIR, or set data = \"/var/lib/vakt-server\" in the file given with --config"
    )]
    NoData,
    #[error(
        "a PostgreSQL store needs --secrets-key FILE (or secrets_key = \"/etc/vakt/secrets.key\" in the config file): the CA key and command-signing keys are kept in the database sealed with it; the replica that initialises the database creates FILE, every other replica needs a copy"
    )]
    SecretsKeyRequired,
    #[error(
        "--secrets-key (secrets_key in the config file) is only for a PostgreSQL store (--store or store =); the embedded store keeps its keys in the data directory, so leave it out"
    )]
    SecretsKeyWithoutStore,
    #[error(
        "metrics on {0} can be reached from other machines, and they would read the fleet's state (lost laptops, findings per rule) and make the server count it: add metrics_token_file = \"/etc/vakt/metrics.token\" to the config file (or pass --metrics-token-file FILE), a file with the token Prometheus sends (its authorization credentials_file); or bind metrics to a loopback address such as 127.0.0.1:9187"
    )]
    MetricsTokenRequired(SocketAddr),
    #[error(
        "{0} is only for the metrics listener; set metrics = \"ADDR\" in the config file (or pass --metrics ADDR), or leave it out"
    )]
    MetricsSettingWithoutMetrics(&'static str),
}

/// A name agents use to reach the server, as it goes into the server certificate: a DNS name
/// (optionally a `*.` wildcard) or an IP address. Checked here because a URL or a `host:port`
/// pasted by mistake would otherwise surface as an opaque certificate error at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.parse::<IpAddr>().is_ok() {
            return Ok(Self(s.to_string()));
        }
        if s.contains("://") {
            return Err(format!(
                "'{s}' is a URL; give the bare host name, e.g. \"vakt.example.org\""
            ));
        }
        if s.contains(':') {
            return Err(format!(
                "'{s}' has a port; give the bare host name (the port belongs in listen)"
            ));
        }
        let name = s.strip_prefix("*.").unwrap_or(s);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || s.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "'{s}' is not a host name (letters, digits, '-' and '.', e.g. \"vakt.example.org\") or an IP address"
            ));
        }
        Ok(Self(s.to_string()))
    }
}

impl TryFrom<String> for HostName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A PostgreSQL store URL (`postgresql://USER@HOST:PORT/DATABASE`). Its scheme is checked
/// when the file is read, so a MySQL or bare host line names its line at once; the rest is
/// checked when the database is connected to. Its `Debug` leaves out the user, any password
/// and the database (see [`crate::redact`]).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StoreUrl(String);

impl StoreUrl {
    /// A URL from `--store`, checked in full when the database is connected to.
    pub fn from_flag(url: String) -> Self {
        Self(url)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            Ok(Self(s))
        } else {
            Err(format!(
                "{} is not a PostgreSQL URL; write \"postgresql://USER@HOST:PORT/DATABASE\" (leave store out for the embedded store)",
                crate::redact::url(&s)
            ))
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::redact::url(&self.0))
    }
}

/// The file as written: every key optional, since flags may supply it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data: Option<PathBuf>,
    /// The config-file twin of `--store`; the embedded store when absent.
    pub store: Option<StoreUrl>,
    /// The config-file twin of `--secrets-key` (PostgreSQL only): the key sealing the shared
    /// secrets in the database.
    #[serde(default, deserialize_with = "absolute_path")]
    pub secrets_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "socket_addr")]
    pub listen: Option<SocketAddr>,
    /// `console = "ADDR"`, or a `[console]` table (`listen`, `[console.oidc]`).
    #[serde(default)]
    pub console: ConsoleFile,
    #[serde(default)]
    pub hostnames: Vec<HostName>,
    /// Where Prometheus scrapes `/metrics`; off when absent.
    #[serde(default, deserialize_with = "socket_addr")]
    pub metrics: Option<SocketAddr>,
    /// The config-file twin of `--metrics-token-file`: the bearer token a scrape must carry
    /// (required when `metrics` is not a loopback address).
    #[serde(default, deserialize_with = "absolute_path")]
    pub metrics_token_file: Option<PathBuf>,
    /// Where notifications are mailed (policy 8.5: violations to the person's manager).
    #[serde(default)]
    pub mail: MailFile,
}

/// The `[mail]` table. Its `Debug` leaves the secrets out (see [`crate::redact`]).
#[derive(Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailFile {
    /// smtp://host:port, smtp://host?tls=required (STARTTLS) or smtps://host.
    pub smtp: Option<String>,
    pub from: Option<String>,
    /// Who hears of a violation when no manager is known.
    pub it_address: Option<String>,
    /// Every event is also POSTed as JSON to each of these URLs.
    #[serde(default)]
    pub webhooks: Vec<String>,
}

impl std::fmt::Debug for MailFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailFile")
            .field("smtp", &crate::redact::opt_url(&self.smtp))
            .field("from", &self.from)
            .field("it_address", &self.it_address)
            .field("webhooks", &crate::redact::urls(&self.webhooks))
            .finish()
    }
}

/// The console's settings: `console = "ADDR"` (the address alone, as before single sign-on), or
/// a table. TOML cannot have both `console = "…"` and `[console.oidc]`, so the table form
/// carries the address as `listen`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsoleFile {
    pub listen: Option<SocketAddr>,
    pub oidc: Option<OidcFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleTable {
    #[serde(default, deserialize_with = "socket_addr")]
    listen: Option<SocketAddr>,
    oidc: Option<OidcFile>,
}

impl<'de> Deserialize<'de> for ConsoleFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ConsoleFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address such as \"127.0.0.1:7480\", or a [console] table")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ConsoleFile, E> {
                Ok(ConsoleFile {
                    listen: Some(parse_socket_addr(s).map_err(E::custom)?),
                    oidc: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ConsoleFile, A::Error> {
                let t =
                    ConsoleTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ConsoleFile {
                    listen: t.listen,
                    oidc: t.oidc,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[console.oidc]`: logging in to the console with the organisation's OpenID Connect
/// provider. Each value is checked where it is read, so a mistake names its line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The provider's issuer URL (its discovery document is under it): https, or http on a
    /// loopback address only (a test provider on this machine).
    #[serde(deserialize_with = "issuer_url")]
    pub issuer: String,
    pub client_id: String,
    /// A file holding the client secret (kept out of this file, which is world-readable);
    /// none for a public client.
    #[serde(default, deserialize_with = "absolute_path")]
    pub client_secret_file: Option<PathBuf>,
    /// Where the provider sends the browser back: this console's `/login/oidc/callback`.
    #[serde(deserialize_with = "redirect_url")]
    pub redirect_url: String,
    /// The ID token claim whose values (a list or one string) map to roles.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Whether pasting an admin token still logs in; `false` leaves single sign-on only.
    #[serde(default = "yes")]
    pub token_login: bool,
    #[serde(default)]
    pub roles: OidcRoles,
}

/// `[console.oidc.roles]`: which values of the role claim give which role.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRoles {
    #[serde(default)]
    pub admin: Vec<String>,
    #[serde(default)]
    pub operator: Vec<String>,
    #[serde(default)]
    pub viewer: Vec<String>,
}

fn default_role_claim() -> String {
    "groups".into()
}

fn yes() -> bool {
    true
}

/// Whether `url` is http(s) with a host, and plain http only to a loopback host.
pub fn check_provider_url(url: &str) -> Result<(), String> {
    let parsed =
        openidconnect::url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(openidconnect::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(format!("'{url}' has no host")),
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "'{url}' is plain http to a host other than this machine; the identity provider must be https"
        )),
        other => Err(format!("'{url}' is {other}://, not https://")),
    }
}

fn issuer_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_provider_url(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn redirect_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    match openidconnect::url::Url::parse(&s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.path() == "/login/oidc/callback" => {
            Ok(s)
        }
        _ => Err(serde::de::Error::custom(format!(
            "'{s}' is not this console's callback, e.g. \"https://vakt.example.org:7480/login/oidc/callback\""
        ))),
    }
}

fn absolute_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if p.is_absolute() {
        Ok(Some(p))
    } else {
        Err(serde::de::Error::custom(format!(
            "'{}' must be an absolute path, e.g. \"/etc/vakt/oidc.secret\"",
            p.display()
        )))
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("'{s}' is not an IP address and port, e.g. \"0.0.0.0:7443\" or \"[::]:7443\"")
    })
}

/// Reads an address from a string with a message that says what to write; toml adds the line
/// and shows the key.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    parse_socket_addr(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl FileConfig {
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
        // toml quotes the bad line; a URL in it may carry a password (`store`, `smtp`).
        let cfg: Self = toml::from_str(text)
            .map_err(|e| crate::redact::urls_in_text(e.to_string().trim_end()))?;
        if let Some(data) = &cfg.data
            && !data.is_absolute()
        {
            // A service's working directory is not something to rely on.
            return Err(format!(
                "data: '{}' must be an absolute path, e.g. \"/var/lib/vakt-server\"",
                data.display()
            ));
        }
        if let Some(o) = &cfg.console.oidc {
            let r = &o.roles;
            if r.admin.is_empty() && r.operator.is_empty() && r.viewer.is_empty() {
                return Err(
                    "console.oidc.roles: no claim value gives a role, so nobody could log in; \
                     e.g. admin = [\"vakt-admins\"]"
                        .into(),
                );
            }
        }
        Ok(cfg)
    }
}

/// What the command line gave; `None` and an empty list mean "not given".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    pub data: Option<PathBuf>,
    pub store: Option<StoreUrl>,
    pub secrets_key: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub console: Option<SocketAddr>,
    pub hostnames: Vec<HostName>,
    pub metrics: Option<SocketAddr>,
    pub metrics_token_file: Option<PathBuf>,
    /// `--metrics-tls`: TLS on a loopback metrics address too.
    pub metrics_tls: bool,
}

/// The settings `serve` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub data: PathBuf,
    /// PostgreSQL; none: the embedded store in `data`.
    pub store: Option<StoreUrl>,
    /// The key sealing a PostgreSQL store's shared secrets (required with one, refused
    /// without: [`Settings::resolve`]).
    pub secrets_key: Option<PathBuf>,
    pub listen: SocketAddr,
    pub console: SocketAddr,
    pub hostnames: Vec<String>,
    /// `/metrics` for Prometheus; none: not served.
    pub metrics: Option<SocketAddr>,
    /// The bearer token a scrape must carry; present whenever `metrics` is not loopback.
    pub metrics_token_file: Option<PathBuf>,
    /// Single sign-on for the console; none: token login only.
    pub console_oidc: Option<OidcFile>,
}

impl Settings {
    /// Flags override the file, the file overrides the defaults. `--hostname` flags replace
    /// the file's list rather than add to it, so what the command line says is the whole truth.
    pub fn resolve(file: Option<FileConfig>, flags: Flags) -> Result<Self, ConfigError> {
        let file = file.unwrap_or_default();
        let hostnames = if flags.hostnames.is_empty() {
            file.hostnames
        } else {
            flags.hostnames
        };
        let store = flags.store.or(file.store);
        let secrets_key = flags.secrets_key.or(file.secrets_key);
        match (&store, &secrets_key) {
            (Some(_), None) => return Err(ConfigError::SecretsKeyRequired),
            (None, Some(_)) => return Err(ConfigError::SecretsKeyWithoutStore),
            _ => {}
        }
        let metrics = flags.metrics.or(file.metrics);
        let metrics_token_file = flags.metrics_token_file.or(file.metrics_token_file);
        match metrics {
            None if metrics_token_file.is_some() => {
                return Err(ConfigError::MetricsSettingWithoutMetrics(
                    "metrics_token_file (--metrics-token-file)",
                ));
            }
            None if flags.metrics_tls => {
                return Err(ConfigError::MetricsSettingWithoutMetrics("--metrics-tls"));
            }
            // Secure by default: open scrapes only where nothing but this machine reaches.
            Some(addr) if !addr.ip().is_loopback() && metrics_token_file.is_none() => {
                return Err(ConfigError::MetricsTokenRequired(addr));
            }
            _ => {}
        }
        Ok(Self {
            data: flags.data.or(file.data).ok_or(ConfigError::NoData)?,
            store,
            secrets_key,
            listen: flags.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN),
            console: flags
                .console
                .or(file.console.listen)
                .unwrap_or(DEFAULT_CONSOLE),
            hostnames: hostnames.into_iter().map(|h| h.0).collect(),
            metrics,
            metrics_token_file,
            console_oidc: file.console.oidc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
data = "/var/lib/vakt-server"
listen = "0.0.0.0:7443"
console = "127.0.0.1:7480"
hostnames = ["vakt.example.org", "10.0.0.5"]
"#;

    #[test]
    fn full_file_parses() {
        let c = FileConfig::parse(GOOD).unwrap();
        assert_eq!(c.data, Some(PathBuf::from("/var/lib/vakt-server")));
        assert_eq!(c.listen, Some("0.0.0.0:7443".parse().unwrap()));
        assert_eq!(c.hostnames.len(), 2);
        assert_eq!(c.hostnames[1].as_str(), "10.0.0.5");
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../deploy/config/server.toml");
        let c = FileConfig::parse(text).unwrap();
        assert_eq!(c.data, Some(PathBuf::from("/var/lib/vakt-server")));
        let s = Settings::resolve(Some(c), Flags::default()).unwrap();
        assert_eq!(s.data, PathBuf::from("/var/lib/vakt-server"));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = FileConfig::parse(&GOOD.replace("console", "consol")).unwrap_err();
        assert!(err.contains("consol") && err.contains("line 4"), "{err}");
        let err = FileConfig::parse(&format!("{GOOD}\n[tls]\n")).unwrap_err();
        assert!(err.contains("tls") && err.contains("line 7"), "{err}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let err = FileConfig::parse(&GOOD.replace("0.0.0.0:7443", "0.0.0.0")).unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("listen") && err.contains("'0.0.0.0'"),
            "{err}"
        );
        let err = FileConfig::parse(
            &GOOD.replace("\"vakt.example.org\"", "\"https://vakt.example.org\""),
        )
        .unwrap_err();
        assert!(err.contains("line 5") && err.contains("is a URL"), "{err}");
        let err =
            FileConfig::parse(&GOOD.replace("\"/var/lib/vakt-server\"", "\"data\"")).unwrap_err();
        assert!(
            err.starts_with("data: 'data' must be an absolute path"),
            "{err}"
        );
        let err = FileConfig::parse(&GOOD.replace("\"/var/lib/vakt-server\"", "7")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn host_names_are_checked() {
        for good in [
            "vakt.example.org",
            "*.example.org",
            "localhost",
            "::1",
            "10.1.2.3",
            "a-b.c",
        ] {
            assert!(good.parse::<HostName>().is_ok(), "{good}");
        }
        for (bad, why) in [
            ("vakt.example.org:7443", "has a port"),
            ("https://vakt", "is a URL"),
            ("", "not a host name"),
            ("vakt..org", "not a host name"),
            ("-vakt.org", "not a host name"),
            ("vakt example", "not a host name"),
            ("väkt.se", "not a host name"),
        ] {
            let err = bad.parse::<HostName>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_in() {
        let file = FileConfig::parse(GOOD).unwrap();
        let flags = Flags {
            data: Some("/tmp/other".into()),
            store: None,
            secrets_key: None,
            listen: Some("127.0.0.1:0".parse().unwrap()),
            console: None,
            hostnames: vec!["other.example.org".parse().unwrap()],
            metrics: None,
            metrics_token_file: None,
            metrics_tls: false,
        };
        let s = Settings::resolve(Some(file.clone()), flags).unwrap();
        assert_eq!(s.data, PathBuf::from("/tmp/other"));
        assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(s.console, "127.0.0.1:7480".parse().unwrap());
        assert_eq!(s.hostnames, vec!["other.example.org".to_string()]);

        let s = Settings::resolve(Some(file), Flags::default()).unwrap();
        assert_eq!(s.listen, "0.0.0.0:7443".parse().unwrap());
        assert_eq!(s.hostnames, vec!["vakt.example.org", "10.0.0.5"]);

        let only_data = Flags {
            data: Some("/srv/vakt".into()),
            ..Flags::default()
        };
        let s = Settings::resolve(None, only_data).unwrap();
        assert_eq!((s.listen, s.console), (DEFAULT_LISTEN, DEFAULT_CONSOLE));
        assert!(s.hostnames.is_empty());
        assert_eq!(s.metrics, None, "metrics are off unless asked for");
        assert_eq!(s.store, None, "the embedded store unless asked for");
    }

    #[test]
    fn the_store_comes_from_the_file_or_the_flag() {
        let url = "postgresql://vakt:hunter2@db.example.org:5432/vakt";
        let file = FileConfig::parse(&format!(
            "{GOOD}store = \"{url}\"\nsecrets_key = \"/etc/vakt/secrets.key\"\n"
        ))
        .unwrap();
        let s = Settings::resolve(Some(file.clone()), Flags::default()).unwrap();
        assert_eq!(s.secrets_key, Some(PathBuf::from("/etc/vakt/secrets.key")));
        assert_eq!(
            s.store.clone().map(StoreUrl::into_string).as_deref(),
            Some(url)
        );
        let shown = format!("{s:?}");
        assert!(
            shown.contains("postgresql://db.example.org:5432/…") && !shown.contains("hunter2"),
            "{shown}"
        );
        let flags = Flags {
            store: Some(StoreUrl::from_flag("postgres://other@h/db".into())),
            ..Flags::default()
        };
        let s = Settings::resolve(Some(file), flags).unwrap();
        assert_eq!(
            s.store.map(StoreUrl::into_string).as_deref(),
            Some("postgres://other@h/db"),
            "the flag wins"
        );
        // PostgreSQL without a secrets key, a secrets key without PostgreSQL, a relative one.
        let no_key = FileConfig::parse(&format!("{GOOD}store = \"{url}\"\n")).unwrap();
        let err = Settings::resolve(Some(no_key), Flags::default()).unwrap_err();
        assert!(
            err.to_string().contains("needs --secrets-key FILE"),
            "{err}"
        );
        let stray = Flags {
            secrets_key: Some("/etc/vakt/secrets.key".into()),
            ..Flags::default()
        };
        let err = Settings::resolve(FileConfig::parse(GOOD).ok(), stray).unwrap_err();
        assert!(
            err.to_string().contains("only for a PostgreSQL store"),
            "{err}"
        );
        let err = FileConfig::parse(&format!("{GOOD}secrets_key = \"secrets.key\"\n")).unwrap_err();
        assert!(err.contains("must be an absolute path"), "{err}");
        // "éa://": the scheme right after a character of two bytes (a fuzzer's find, which
        // panicked where the message was redacted).
        for bad in [
            "mysql://vakt:hunter2@db/vakt",
            "db.example.org",
            "éa://vakt:hunter2@db/vakt",
        ] {
            let err = FileConfig::parse(&format!("{GOOD}store = \"{bad}\"\n")).unwrap_err();
            assert!(
                err.contains("store")
                    && err.contains("line 6")
                    && err.contains("not a PostgreSQL URL")
                    && !err.contains("hunter2"),
                "{err}"
            );
        }
    }

    const OIDC: &str = r#"
data = "/var/lib/vakt-server"
[console]
listen = "127.0.0.1:7480"
[console.oidc]
issuer = "https://login.microsoftonline.com/TENANT/v2.0"
client_id = "vakt"
client_secret_file = "/etc/vakt/oidc.secret"
redirect_url = "https://vakt.example.org:7480/login/oidc/callback"
role_claim = "groups"
[console.oidc.roles]
admin = ["vakt-admins"]
operator = ["vakt-operators"]
viewer = ["vakt-viewers"]
"#;

    #[test]
    fn console_oidc_table_parses_as_the_issue_writes_it() {
        let c = FileConfig::parse(OIDC).unwrap();
        let s = Settings::resolve(Some(c), Flags::default()).unwrap();
        assert_eq!(s.console, "127.0.0.1:7480".parse().unwrap());
        let o = s.console_oidc.unwrap();
        assert_eq!(o.client_id, "vakt");
        assert!(o.token_login, "token login stays on unless turned off");
        assert_eq!(o.roles.admin, vec!["vakt-admins"]);
        let off = OIDC.replace("role_claim = \"groups\"", "token_login = false");
        assert!(
            !FileConfig::parse(&off)
                .unwrap()
                .console
                .oidc
                .unwrap()
                .token_login
        );
    }

    #[test]
    fn console_oidc_mistakes_name_their_line() {
        let err = FileConfig::parse(&OIDC.replace("https://login", "http://login")).unwrap_err();
        assert!(
            err.contains("line 6") && err.contains("plain http"),
            "{err}"
        );
        let local = OIDC.replace(
            "https://login.microsoftonline.com/TENANT/v2.0",
            "http://127.0.0.1:9400",
        );
        assert!(
            FileConfig::parse(&local).is_ok(),
            "plain http is fine on loopback"
        );
        let err = FileConfig::parse(&OIDC.replace("/login/oidc/callback", "/cb")).unwrap_err();
        assert!(err.contains("line 9") && err.contains("callback"), "{err}");
        let err = FileConfig::parse(&OIDC.replace("\"/etc/vakt/oidc.secret\"", "\"oidc.secret\""))
            .unwrap_err();
        assert!(err.contains("line 8") && err.contains("absolute"), "{err}");
        let err = FileConfig::parse(&OIDC.replace("client_id", "clientid")).unwrap_err();
        assert!(err.contains("clientid"), "{err}");
        let no_roles = OIDC.split("[console.oidc.roles]").next().unwrap();
        let err = FileConfig::parse(no_roles).unwrap_err();
        assert!(err.contains("console.oidc.roles"), "{err}");
    }

    #[test]
    fn metrics_come_from_the_file_or_the_flag() {
        let file = FileConfig::parse(&format!("{GOOD}metrics = \"127.0.0.1:9187\"\n")).unwrap();
        let s = Settings::resolve(Some(file.clone()), Flags::default()).unwrap();
        assert_eq!(s.metrics, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(
            s.metrics_token_file, None,
            "loopback stays open without a token"
        );
        let flag = Flags {
            metrics: Some("0.0.0.0:9100".parse().unwrap()),
            metrics_token_file: Some("/etc/vakt/metrics.token".into()),
            ..Flags::default()
        };
        let s = Settings::resolve(Some(file), flag).unwrap();
        assert_eq!(s.metrics, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(
            s.metrics_token_file,
            Some(PathBuf::from("/etc/vakt/metrics.token"))
        );
        let err = FileConfig::parse(&format!("{GOOD}metrics = \"9187\"\n")).unwrap_err();
        assert!(err.contains("metrics") && err.contains("line 6"), "{err}");
        let err = FileConfig::parse(&format!(
            "{GOOD}metrics = \"127.0.0.1:9187\"\nmetrics_token_file = \"metrics.token\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("line 7") && err.contains("must be an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn metrics_beyond_loopback_need_a_token() {
        for addr in [
            "0.0.0.0:9187",
            "[::]:9187",
            "10.0.0.5:9187",
            "[::ffff:127.0.0.1]:9187",
        ] {
            let file = FileConfig::parse(&format!("{GOOD}metrics = \"{addr}\"\n")).unwrap();
            let err = Settings::resolve(Some(file), Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(addr)
                    && err.contains("metrics_token_file = ")
                    && err.contains("--metrics-token-file"),
                "{err}"
            );
        }
        let file = FileConfig::parse(&format!(
            "{GOOD}metrics = \"0.0.0.0:9187\"\nmetrics_token_file = \"/etc/vakt/metrics.token\"\n"
        ))
        .unwrap();
        let s = Settings::resolve(Some(file), Flags::default()).unwrap();
        assert_eq!(
            s.metrics_token_file,
            Some(PathBuf::from("/etc/vakt/metrics.token"))
        );
        for ok in ["127.0.0.1:9187", "[::1]:9187", "127.0.0.2:9187"] {
            let flag = Flags {
                metrics: Some(ok.parse().unwrap()),
                ..Flags::default()
            };
            assert!(Settings::resolve(Some(FileConfig::parse(GOOD).unwrap()), flag).is_ok());
        }
        // A token or TLS without a metrics listener is a mistake worth saying.
        let file = FileConfig::parse(&format!(
            "{GOOD}metrics_token_file = \"/etc/vakt/metrics.token\"\n"
        ))
        .unwrap();
        let err = Settings::resolve(Some(file), Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("metrics_token_file (--metrics-token-file) is only"),
            "{err}"
        );
        let flag = Flags {
            metrics_tls: true,
            ..Flags::default()
        };
        let err = Settings::resolve(Some(FileConfig::parse(GOOD).unwrap()), flag)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--metrics-tls is only"), "{err}");
    }

    #[test]
    fn no_data_anywhere_is_an_error_that_says_what_to_do() {
        let err = Settings::resolve(Some(FileConfig::default()), Flags::default()).unwrap_err();
        assert!(err.to_string().contains("--data"), "{err}");
    }
}
