//! Thunderbird: every profile of every install (native, flatpak, snap and the old Debian
//! locations), and in each profile the accounts, incoming and outgoing servers, identities with
//! their signatures, and the forwarding actions of every server's message filters.
//!
//! Where things are, from Thunderbird's own code:
//! - `profiles.ini` (`[ProfileN]` with `Path`, `IsRelative`, `Default`; `[Install<hash>]`
//!   with `Default`) and `installs.ini` (`[<hash>]` with `Default`) name the profiles; a
//!   relative path is relative to the directory holding `profiles.ini`.
//! - `prefs.js` (with `user.js` over it, as at startup) holds the account manager's prefs:
//!   `mail.accountmanager.accounts` lists accounts; `mail.account.<a>.server` and
//!   `.identities` link them to `mail.server.<s>.*` (`type`, `hostname`, `port`, `socketType`,
//!   `userName`, `directory`, `directory-rel`) and `mail.identity.<i>.*` (`useremail`,
//!   `fullName`, `htmlSigText`, `htmlSigFormat`, `attach_signature`, `sig_file`,
//!   `sig_file-rel`, `smtpServer`); `mail.smtpservers` lists `mail.smtpserver.<k>.*`
//!   (`hostname`, `port`, `try_ssl`, `username`), `mail.smtp.defaultserver` names the one an
//!   identity without `smtpServer` uses.
//! - Security (`socketType`, and `try_ssl` for SMTP, both nsMsgSocketType): 0 plain,
//!   2 STARTTLS, 3 SSL/TLS. 1 was "try STARTTLS"; Thunderbird's migration turns it into 2, so
//!   it is reported as STARTTLS. No value means Thunderbird's default applies (`default`).
//!   Any other number is reported as `default` too: Thunderbird has no meaning for it.
//! - A `-rel` path pref (`[ProfD]ImapMail/host`) is relative to the profile and wins over the
//!   absolute one, as in `NS_GetPersistentFile`; a server without either keeps its mail in
//!   `ImapMail/<host>` (IMAP) or `Mail/<host>` (everything else).
//!
//! Report rules: a port of 0 means the pref is unset (the client's default port). Servers of
//! type `none` (Local Folders), `rss` and `im` are not mail transports and are not listed as
//! accounts, but their filters are read. A filter that only runs when started by hand is
//! reported disabled with "(manual only)" after its name. Add-on (`Custom`) actions cannot be
//! judged from here: each is reported as a forward with an empty target and the add-on's action
//! id in the rule, so an admin sees it.

use super::Probe;
use super::filters::{Filter, parse_filter_rules};
use super::ini::Ini;
use super::prefs::{Prefs, parse_prefs};
use super::text::{bare_address, clean_signature, decode, looks_like_html};
use crate::collect::limits::thousands;
use crate::collect::userfile::{self, normalize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vakt_proto::model::{ForwardKind, MailSecurity};

/// Keys read from one list pref (`mail.accountmanager.accounts`, an account's `identities`,
/// `mail.smtpservers`). Real profiles list a few; the cap is above the user's item budget
/// ([`super::MAX_ITEMS_PER_USER`]) so that budget still says what it leaves out, and it keeps
/// a hostile prefs.js (thousands of accounts each naming thousands of identities) from making
/// the accounts-by-identities walk take the agent's memory and time.
pub const MAX_KEYS: usize = 256;

pub const CLIENT: &str = "thunderbird";

/// Where Thunderbird keeps `profiles.ini`, relative to the home directory: native, flatpak,
/// snap, and Debian's older package names.
pub const PROFILE_BASES: &[&str] = &[
    ".thunderbird",
    ".var/app/org.mozilla.Thunderbird/.thunderbird",
    "snap/thunderbird/common/.thunderbird",
    ".mozilla-thunderbird",
    ".icedove",
];

/// Server types that are not a mail transport to a server.
const NOT_TRANSPORTS: &[&str] = &["none", "rss", "im"];

/// Profiles read per `profiles.ini`: people have one to three, a file naming 40,000 is an
/// attack on the report, not a mail setup.
pub const MAX_PROFILES: usize = 32;
/// Filters read per `msgFilterRules.dat`.
pub const MAX_FILTERS: usize = 1_000;

/// The profile directories (device paths) that `profiles.ini` and `installs.ini` in `base`
/// name, in file order, each once.
pub fn profile_dirs(base: &Path, profiles: Option<&Ini>, installs: Option<&Ini>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    // Seen paths in a set: a user's profiles.ini can name 40,000 profiles, and a scan of `out`
    // for each made this quadratic (32 s at 40,000, measured in issue 16).
    let mut seen: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut add = |path: &str, relative: bool| {
        let path = path.trim();
        if path.is_empty() {
            return;
        }
        let p = if relative && !path.starts_with('/') {
            normalize(&base.join(path))
        } else {
            normalize(Path::new(path))
        };
        if seen.insert(p.clone()) {
            out.push(p);
        }
    };
    if let Some(ini) = profiles {
        for s in &ini.sections {
            if s.name.starts_with("Profile")
                && let Some(path) = s.get("Path")
            {
                // nsToolkitProfileService: IsRelative=1 means relative to this directory.
                let relative = s.get("IsRelative").is_none_or(|v| v.trim() == "1");
                add(path, relative);
            }
        }
        for s in &ini.sections {
            if s.name.starts_with("Install")
                && let Some(path) = s.get("Default")
            {
                add(path, true);
            }
        }
    }
    if let Some(ini) = installs {
        for s in &ini.sections {
            if let Some(path) = s.get("Default") {
                add(path, true);
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Server {
    pub key: String,
    pub kind: String,
    pub hostname: String,
    pub port: Option<i32>,
    pub socket_type: Option<i32>,
    pub user_name: String,
    pub directory: Option<String>,
    pub directory_rel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub key: String,
    pub email: String,
    pub full_name: String,
    pub html_sig_text: String,
    pub html_sig_format: bool,
    pub attach_signature: bool,
    pub sig_file: Option<String>,
    pub sig_file_rel: Option<String>,
    pub smtp_server: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Smtp {
    pub key: String,
    pub hostname: String,
    pub port: Option<i32>,
    pub try_ssl: Option<i32>,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    pub key: String,
    pub server: Option<Server>,
    /// Shared: accounts may name the same identity, which is read once (its signature text
    /// may be megabytes).
    pub identities: Vec<Arc<Identity>>,
}

/// The account manager's view of one profile's prefs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub accounts: Vec<Account>,
    pub smtp: Vec<Smtp>,
    pub default_smtp: Option<String>,
    /// List prefs that named more than [`MAX_KEYS`] keys, with how many they named.
    pub too_long: Vec<(String, usize)>,
}

/// Splits a comma-separated key list (`account1,account2`) as the account manager does, each
/// key once (it skips one it has loaded already), at most [`MAX_KEYS`] of them; a longer
/// list is noted in `too_long` under `pref`.
fn keys(p: &Prefs, pref: &str, too_long: &mut Vec<(String, usize)>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let all: Vec<&str> = p
        .str(pref)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty() && seen.insert(*k))
        .collect();
    if all.len() > MAX_KEYS {
        too_long.push((pref.to_string(), all.len()));
    }
    all.into_iter().take(MAX_KEYS).map(str::to_string).collect()
}

/// Builds the account configuration from a profile's prefs.
pub fn config_from_prefs(p: &Prefs) -> Config {
    let s = |name: String| p.str(&name).unwrap_or("").to_string();
    let server = |key: &str| Server {
        key: key.to_string(),
        kind: s(format!("mail.server.{key}.type")),
        hostname: s(format!("mail.server.{key}.hostname")),
        port: p.int(&format!("mail.server.{key}.port")),
        socket_type: p.int(&format!("mail.server.{key}.socketType")),
        user_name: s(format!("mail.server.{key}.userName")),
        directory: p
            .str(&format!("mail.server.{key}.directory"))
            .map(str::to_string),
        directory_rel: p
            .str(&format!("mail.server.{key}.directory-rel"))
            .map(str::to_string),
    };
    let identity = |key: &str| Identity {
        key: key.to_string(),
        email: s(format!("mail.identity.{key}.useremail")),
        full_name: s(format!("mail.identity.{key}.fullName")),
        html_sig_text: s(format!("mail.identity.{key}.htmlSigText")),
        html_sig_format: p
            .bool(&format!("mail.identity.{key}.htmlSigFormat"))
            .unwrap_or(false),
        attach_signature: p
            .bool(&format!("mail.identity.{key}.attach_signature"))
            .unwrap_or(false),
        sig_file: p
            .str(&format!("mail.identity.{key}.sig_file"))
            .map(str::to_string),
        sig_file_rel: p
            .str(&format!("mail.identity.{key}.sig_file-rel"))
            .map(str::to_string),
        smtp_server: p
            .str(&format!("mail.identity.{key}.smtpServer"))
            .filter(|k| !k.is_empty())
            .map(str::to_string),
    };
    let mut too_long = Vec::new();
    let mut read: BTreeMap<String, Arc<Identity>> = BTreeMap::new();
    let mut accounts = Vec::new();
    for a in keys(p, "mail.accountmanager.accounts", &mut too_long) {
        let identities = keys(p, &format!("mail.account.{a}.identities"), &mut too_long)
            .into_iter()
            .map(|i| {
                read.entry(i)
                    .or_insert_with_key(|i| Arc::new(identity(i)))
                    .clone()
            })
            .collect();
        accounts.push(Account {
            server: p
                .str(&format!("mail.account.{a}.server"))
                .filter(|k| !k.is_empty())
                .map(server),
            identities,
            key: a,
        });
    }
    let smtp = keys(p, "mail.smtpservers", &mut too_long)
        .into_iter()
        .map(|k| Smtp {
            hostname: s(format!("mail.smtpserver.{k}.hostname")),
            port: p.int(&format!("mail.smtpserver.{k}.port")),
            try_ssl: p.int(&format!("mail.smtpserver.{k}.try_ssl")),
            username: s(format!("mail.smtpserver.{k}.username")),
            key: k,
        })
        .collect();
    Config {
        accounts,
        smtp,
        default_smtp: p
            .str("mail.smtp.defaultserver")
            .filter(|k| !k.is_empty())
            .map(str::to_string),
        too_long,
    }
}

/// nsMsgSocketType (incoming `socketType`, outgoing `try_ssl`) as reported security.
pub fn security(socket_type: Option<i32>) -> MailSecurity {
    match socket_type {
        Some(0) => MailSecurity::None,
        Some(1 | 2) => MailSecurity::Starttls,
        Some(3) => MailSecurity::Tls,
        _ => MailSecurity::Default,
    }
}

/// A `[ProfD]`-relative pref (`[ProfD]../sig.txt`) as a device path under `profile`.
fn profile_relative(profile: &Path, rel: &str) -> Option<PathBuf> {
    let rest = rel.strip_prefix("[ProfD]")?;
    Some(normalize(&profile.join(rest)))
}

/// The device path a path pref names: the `-rel` form first, then the absolute one.
fn pref_path(profile: &Path, rel: Option<&str>, abs: Option<&str>) -> Option<PathBuf> {
    rel.and_then(|r| profile_relative(profile, r)).or_else(|| {
        abs.filter(|a| a.starts_with('/'))
            .map(|a| normalize(Path::new(a)))
    })
}

/// Collects every Thunderbird profile of the probe's user.
pub fn collect(probe: &mut Probe<'_>) {
    let home = PathBuf::from(&probe.user.home);
    let mut seen = BTreeSet::new();
    for base in PROFILE_BASES {
        let base = home.join(base);
        let profiles = probe.read_ini(&base.join("profiles.ini"), &[';', '#']);
        let installs = probe.read_ini(&base.join("installs.ini"), &[';', '#']);
        let dirs = profile_dirs(&base, profiles.as_ref(), installs.as_ref());
        if dirs.len() > MAX_PROFILES {
            probe.error(
                &base.join("profiles.ini"),
                format!(
                    "names {} profiles: only the first {MAX_PROFILES} were read",
                    thousands(dirs.len())
                ),
            );
        }
        for dir in dirs.into_iter().take(MAX_PROFILES) {
            if !seen.insert(dir.clone()) {
                continue;
            }
            if userfile::is_dir(probe.root, &dir) {
                collect_profile(probe, &dir);
            } else {
                probe.error(
                    &base.join("profiles.ini"),
                    format!("profile directory {} is missing", dir.display()),
                );
            }
        }
    }
}

fn collect_profile(probe: &mut Probe<'_>, profile: &Path) {
    let mut prefs = Prefs::default();
    let mut found = false;
    for name in ["prefs.js", "user.js"] {
        let path = profile.join(name);
        if let Some(bytes) = probe.read(&path) {
            found = true;
            let parsed = parse_prefs(&bytes);
            probe.problems(&path, parsed.problems);
            prefs.overlay(parsed.value);
        }
    }
    if !found {
        // A profile Thunderbird has not written prefs to yet has no accounts.
        return;
    }
    let config = config_from_prefs(&prefs);
    for (pref, n) in &config.too_long {
        probe.error(
            &profile.join("prefs.js"),
            format!(
                "{pref} names {} keys: only the first {MAX_KEYS} were read",
                thousands(*n)
            ),
        );
    }

    let mut identities_done = BTreeSet::new();
    let mut servers_done = BTreeSet::new();
    for account in &config.accounts {
        let Some(server) = &account.server else {
            continue;
        };
        if !servers_done.insert(server.key.clone()) {
            continue;
        }
        if !NOT_TRANSPORTS.contains(&server.kind.as_str()) {
            let address = account
                .identities
                .iter()
                .map(|i| i.email.clone())
                .find(|e| !e.is_empty())
                .unwrap_or_else(|| server.user_name.clone());
            probe.account(
                CLIENT,
                address,
                server.hostname.clone(),
                server.port,
                security(server.socket_type),
                server.kind.clone(),
            );
        }
        if server.kind != "nntp" {
            collect_filters(probe, profile, server);
        }
    }
    for smtp in &config.smtp {
        let address = config
            .accounts
            .iter()
            .flat_map(|a| &a.identities)
            .find(|i| match &i.smtp_server {
                Some(k) => *k == smtp.key,
                None => config.default_smtp.as_deref() == Some(smtp.key.as_str()),
            })
            .map(|i| i.email.clone())
            .unwrap_or_else(|| smtp.username.clone());
        probe.account(
            CLIENT,
            address,
            smtp.hostname.clone(),
            smtp.port,
            security(smtp.try_ssl),
            "smtp".to_string(),
        );
    }
    for identity in config.accounts.iter().flat_map(|a| &a.identities) {
        if !identities_done.insert(identity.key.clone()) {
            continue;
        }
        let signature = signature(probe, profile, identity);
        probe.identity(
            CLIENT,
            identity.email.clone(),
            identity.full_name.clone(),
            signature,
        );
    }
}

/// The identity's signature as Thunderbird would insert it: the file when `attach_signature`
/// is on (HTML if its name or content says so), otherwise `htmlSigText`.
fn signature(probe: &mut Probe<'_>, profile: &Path, identity: &Identity) -> String {
    if !identity.attach_signature {
        return clean_signature(&identity.html_sig_text, identity.html_sig_format);
    }
    let Some(path) = pref_path(
        profile,
        identity.sig_file_rel.as_deref(),
        identity.sig_file.as_deref(),
    ) else {
        probe.error(
            &profile.join("prefs.js"),
            format!(
                "identity {} uses a signature file but names none",
                identity.key
            ),
        );
        return String::new();
    };
    let Some(bytes) = probe.read_expected(&path, "signature file is missing") else {
        return String::new();
    };
    let text = decode(&bytes);
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("htm") || e.eq_ignore_ascii_case("html"));
    let html = by_name || looks_like_html(&text);
    clean_signature(&text, html)
}

/// Where a server keeps its mail (and its `msgFilterRules.dat`).
fn server_dir(probe: &Probe<'_>, profile: &Path, server: &Server) -> PathBuf {
    if let Some(p) = pref_path(
        profile,
        server.directory_rel.as_deref(),
        server.directory.as_deref(),
    ) && userfile::is_dir(probe.root, &p)
    {
        return p;
    }
    // No usable directory pref: the protocol's default place, under the host name.
    let top = if server.kind == "imap" {
        "ImapMail"
    } else {
        "Mail"
    };
    profile.join(top).join(&server.hostname)
}

fn collect_filters(probe: &mut Probe<'_>, profile: &Path, server: &Server) {
    let path = server_dir(probe, profile, server).join("msgFilterRules.dat");
    let Some(bytes) = probe.read(&path) else {
        return;
    };
    let parsed = parse_filter_rules(&bytes);
    probe.problems(&path, parsed.problems);
    if parsed.value.len() > MAX_FILTERS {
        probe.error(
            &path,
            format!(
                "{} filters: only the first {} were read",
                thousands(parsed.value.len()),
                thousands(MAX_FILTERS)
            ),
        );
    }
    for filter in parsed.value.iter().take(MAX_FILTERS) {
        forwards_of(probe, filter);
    }
}

fn forwards_of(probe: &mut Probe<'_>, filter: &Filter) {
    let automatic = filter.runs_by_itself();
    let name = if automatic {
        filter.name.clone()
    } else {
        format!("{} (manual only)", filter.name)
    };
    let enabled = filter.enabled && automatic;
    // Forwarding sends a copy; the message itself stays unless the filter also deletes it.
    let keeps_copy = !filter.actions.iter().any(|a| a.kind == "Delete");
    for action in &filter.actions {
        match action.kind.as_str() {
            // An empty target forwards nothing (a value cut off by the end of the file).
            "Forward" if !action.value.trim().is_empty() => probe.forward(
                CLIENT,
                name.clone(),
                enabled,
                bare_address(&action.value),
                ForwardKind::Forward,
                keeps_copy,
            ),
            "Custom" => {
                let id = if action.custom_id.is_empty() {
                    "without an id"
                } else {
                    &action.custom_id
                };
                probe.forward(
                    CLIENT,
                    format!("{name} (add-on action {id}: cannot be judged)"),
                    enabled,
                    String::new(),
                    ForwardKind::Forward,
                    keeps_copy,
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ini::parse_ini;
    use super::*;

    #[test]
    fn profiles_from_both_ini_files_once_each() {
        let profiles = parse_ini(
            "[Install4F96D1932A9F858E]\nDefault=abcd.default-release\nLocked=1\n\n\
             [Profile1]\nName=default\nIsRelative=1\nPath=efgh.default\nDefault=1\n\n\
             [Profile0]\nName=default-release\nIsRelative=1\nPath=abcd.default-release\n\n\
             [Profile2]\nName=extern\nIsRelative=0\nPath=/srv/mail/tb\n\n\
             [General]\nStartWithLastProfile=1\nVersion=2\n",
            &[';', '#'],
        )
        .value;
        let installs = parse_ini(
            "[4F96D1932A9F858E]\nDefault=abcd.default-release\n[X]\nDefault=Profiles/../only.installs\n",
            &[';', '#'],
        )
        .value;
        let base = Path::new("/home/anna/.thunderbird");
        let got = profile_dirs(base, Some(&profiles), Some(&installs));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/home/anna/.thunderbird/efgh.default"),
                PathBuf::from("/home/anna/.thunderbird/abcd.default-release"),
                PathBuf::from("/srv/mail/tb"),
                PathBuf::from("/home/anna/.thunderbird/only.installs"),
            ]
        );
    }

    /// 40,000 profiles, every other one repeating an earlier path: each path once, in file
    /// order (the shape a hostile profiles.ini has; the old scan was quadratic in it).
    #[test]
    fn many_profiles_are_deduplicated_in_order() {
        let mut text = String::new();
        for i in 0..40_000 {
            text.push_str(&format!("[Profile{i}]\nIsRelative=1\nPath=p{}\n", i / 2));
        }
        let profiles = parse_ini(&text, &[';', '#']).value;
        let got = profile_dirs(Path::new("/home/eve/.thunderbird"), Some(&profiles), None);
        assert_eq!(got.len(), 20_000);
        assert_eq!(got[0], PathBuf::from("/home/eve/.thunderbird/p0"));
        assert_eq!(got[19_999], PathBuf::from("/home/eve/.thunderbird/p19999"));
    }

    #[test]
    fn socket_types() {
        assert_eq!(security(None), MailSecurity::Default);
        assert_eq!(security(Some(0)), MailSecurity::None);
        assert_eq!(security(Some(1)), MailSecurity::Starttls);
        assert_eq!(security(Some(2)), MailSecurity::Starttls);
        assert_eq!(security(Some(3)), MailSecurity::Tls);
        assert_eq!(security(Some(7)), MailSecurity::Default);
    }

    #[test]
    fn config_links_accounts_servers_and_identities() {
        let prefs = parse_prefs(
            br#"user_pref("mail.accountmanager.accounts", "account1, account2");
user_pref("mail.account.account1.server", "server1");
user_pref("mail.account.account1.identities", "id1,id2");
user_pref("mail.account.account2.server", "server2");
user_pref("mail.server.server1.type", "imap");
user_pref("mail.server.server1.hostname", "imap.sorsele.se");
user_pref("mail.server.server1.port", 993);
user_pref("mail.server.server1.socketType", 3);
user_pref("mail.server.server1.directory-rel", "[ProfD]ImapMail/imap.sorsele.se");
user_pref("mail.server.server2.type", "none");
user_pref("mail.identity.id1.useremail", "anna@sorsele.se");
user_pref("mail.identity.id1.htmlSigFormat", true);
user_pref("mail.identity.id2.smtpServer", "smtp2");
user_pref("mail.smtpservers", "smtp1,smtp2");
user_pref("mail.smtpserver.smtp1.try_ssl", 2);
user_pref("mail.smtp.defaultserver", "smtp1");
"#,
        )
        .value;
        let c = config_from_prefs(&prefs);
        assert_eq!(c.accounts.len(), 2);
        let s1 = c.accounts[0].server.as_ref().unwrap();
        assert_eq!(
            (
                s1.kind.as_str(),
                s1.hostname.as_str(),
                s1.port,
                s1.socket_type
            ),
            ("imap", "imap.sorsele.se", Some(993), Some(3))
        );
        assert_eq!(c.accounts[0].identities[0].email, "anna@sorsele.se");
        assert!(c.accounts[0].identities[0].html_sig_format);
        assert_eq!(
            c.accounts[0].identities[1].smtp_server.as_deref(),
            Some("smtp2")
        );
        assert_eq!(c.smtp[0].try_ssl, Some(2));
        assert_eq!(c.smtp[1].try_ssl, None);
        assert_eq!(c.default_smtp.as_deref(), Some("smtp1"));
    }

    #[test]
    fn hostile_key_lists_are_read_once_each_and_capped() {
        // A prefs.js a user can write: one account key repeated, then more accounts than the
        // cap, every one naming the same identity with a large signature, and an identity
        // list longer than the cap. Read naively, that is accounts × identities copies of
        // the signature.
        let mut text = String::from("user_pref(\"mail.accountmanager.accounts\", \"a,a,a");
        for n in 0..1000 {
            text.push_str(&format!(",b{n}"));
        }
        text.push_str("\");\n");
        for n in 0..1000 {
            text.push_str(&format!(
                "user_pref(\"mail.account.b{n}.identities\", \"i,i\");\n"
            ));
        }
        let many: Vec<String> = (0..300).map(|n| format!("j{n}")).collect();
        text.push_str(&format!(
            "user_pref(\"mail.account.a.identities\", \"i,{}\");\n",
            many.join(",")
        ));
        text.push_str(&format!(
            "user_pref(\"mail.identity.i.htmlSigText\", \"{}\");\n",
            "x".repeat(100_000)
        ));
        let prefs = parse_prefs(text.as_bytes()).value;
        let c = config_from_prefs(&prefs);
        assert_eq!(c.accounts.len(), MAX_KEYS);
        assert_eq!(c.accounts[0].key, "a");
        assert_eq!(c.accounts[1].key, "b0");
        assert_eq!(c.accounts[0].identities.len(), MAX_KEYS);
        assert_eq!(c.accounts[1].identities.len(), 1);
        // One identity, read once, shared by every account that names it.
        let first = &c.accounts[0].identities[0];
        assert_eq!(first.html_sig_text.len(), 100_000);
        assert!(
            c.accounts
                .iter()
                .skip(1)
                .all(|a| Arc::ptr_eq(&a.identities[0], first))
        );
        assert_eq!(
            c.too_long,
            vec![
                ("mail.accountmanager.accounts".to_string(), 1001),
                ("mail.account.a.identities".to_string(), 301),
            ]
        );
    }

    #[test]
    fn relative_paths_prefer_the_rel_pref() {
        let profile = Path::new("/home/a/.thunderbird/p");
        assert_eq!(
            pref_path(profile, Some("[ProfD]../../sig.html"), Some("/elsewhere")),
            Some(PathBuf::from("/home/a/sig.html"))
        );
        assert_eq!(
            pref_path(profile, None, Some("/home/a/sig.txt")),
            Some(PathBuf::from("/home/a/sig.txt"))
        );
        assert_eq!(
            pref_path(profile, Some("sig.txt"), Some("C:\\sig.txt")),
            None
        );
    }
}
