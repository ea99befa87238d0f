//! Mail settings of every local user, from every mail client and delivery file on the device:
//! accounts with their transport security, forwarding rules, and identities with signatures
//! (policy sections 8.2 and 9).
//!
//! Sources, one module each: Thunderbird ([`thunderbird`], with [`prefs`] and [`filters`]),
//! Evolution ([`evolution`]), the active Sieve script ([`sieve`]) and `~/.forward`
//! ([`dot_forward`], with [`exim_filter`]); [`rules`] is what the delivery-rule readers find.
//! Every item carries its `client` (`thunderbird`, `evolution`, `sieve`, `dot-forward`) and
//! `user`.
//!
//! A file that cannot be read or parsed is an error naming its device path (and line), and
//! costs only what that file would have said: the parsers keep what they can, as the clients
//! themselves do, and everything else stands. Files are read through [`userfile`] (no waiting
//! on a FIFO, links followed only inside the root) and only if the user could read them
//! ([`userfile::Opened::readable_by`]).
//!
//! One user's settings are bounded, so a hostile home cannot crowd the others out of the
//! report: at most [`MAX_FILES_PER_USER`] files and [`MAX_BYTES_PER_USER`] bytes read, at most
//! [`MAX_ITEMS_PER_USER`] accounts, forwards and identities each, at most
//! [`MAX_PROBLEMS_PER_FILE`] problems kept per file; what is left out is said in the errors.
//!
//! What the reported values mean where a client leaves room:
//! - `accounts[].port` 0: no port configured, the client's default for the protocol applies.
//! - `forwards[].target`: an address (normalised as RFC 5322 reads it); `|command` or `/file`
//!   (a `.forward` or Exim filter delivery to a program, kind `pipe`, or a file, kind `file`;
//!   a Sieve `pipe` names its program and arguments); `:include:/path` (a `.forward` include,
//!   not followed); a bare local user name; or empty when the destination cannot be known (a
//!   Thunderbird add-on action, whose rule text names the add-on action, or a rule the reader
//!   could not read, see `problem`).
//! - `forwards[].problem`: set when the reader cannot tell where the rule sends mail ("rule
//!   not understood, may forward: ...", a target built from the message, a list whose members
//!   are elsewhere); the policy makes such a rule a notice instead of passing it.
//! - `forwards[].rule` for Sieve and `.forward` filters: the file (the script a redirect is in,
//!   `~/.forward (Exim filter)`) and the conditions on the way, outermost first, includes as
//!   `include "name"`; a value assigned in a branch adds that branch's condition.
//! - `forwards[].enabled` false with "(manual only)" in the rule: the filter exists but runs
//!   only when the user starts it, so it forwards nothing by itself.
//! - `forwards[].keeps_copy`: client filters forward a copy, so it is true unless the same
//!   rule also deletes the message; Sieve: `:copy`, or `keep`/`fileinto` beside the redirect;
//!   `.forward`: the owner's own `\user` entry is present; Exim filter: `unseen`, or a `save`
//!   or delivery to the owner beside it.
//! - Signatures are the text the client would insert (HTML reduced to text), at most 1,000
//!   characters; empty when there is none, or when Evolution would run a script for it.

pub mod dot_forward;
pub mod evolution;
pub mod exim_filter;
pub mod filters;
pub mod ini;
pub mod prefs;
pub mod rules;
pub mod sieve;
pub mod text;
pub mod thunderbird;

use super::limits::thousands;
use super::userfile::{self, ReadError};
use super::users::{User, local_users};
use super::{Collected, Root};
use rules::Reading;
use std::path::{Path, PathBuf};
use text::Problem;
use vakt_proto::model::{
    ForwardKind, MailAccount, MailForward, MailIdentity, MailSecurity, MailSettings, SectionKind,
};

/// Collects the mail settings of every local user with a home directory under `root`.
pub fn collect(root: &Root) -> Collected<MailSettings> {
    let users = local_users(root, SectionKind::Mail);
    let mut out = Collected::new(MailSettings::default());
    out.errors.extend(users.errors);
    for user in &users.value {
        let mut probe = Probe::new(root, user, &mut out);
        thunderbird::collect(&mut probe);
        evolution::collect(&mut probe);
        sieve::collect(&mut probe);
        dot_forward::collect(&mut probe);
        probe.finish();
    }
    out
}

/// The largest mail settings file read: settings files are kilobytes, a bigger one is not what
/// we think it is.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Files read per user, all clients together.
pub const MAX_FILES_PER_USER: usize = 1_000;
/// Bytes read per user, all clients together.
pub const MAX_BYTES_PER_USER: u64 = 64 * 1024 * 1024;
/// Accounts, forwards and identities reported per user (each).
pub const MAX_ITEMS_PER_USER: usize = 200;
/// Problems kept per file; the rest are counted.
pub const MAX_PROBLEMS_PER_FILE: usize = 20;
/// Entries looked at in one settings directory (Evolution's sources).
pub const MAX_DIR_ENTRIES: usize = 1_000;

/// Characters kept of any one reported value (a rule name, an address): a user writes these,
/// and a megabyte-long filter name must not cost the report a megabyte.
pub const MAX_FIELD_CHARS: usize = 1_000;

/// A reported value, cut at [`MAX_FIELD_CHARS`].
fn field(s: String) -> String {
    if s.len() <= MAX_FIELD_CHARS {
        s
    } else {
        text::truncate_chars(&s, MAX_FIELD_CHARS)
    }
}

/// What one user's settings have cost so far, against the per-user budgets.
#[derive(Debug, Default)]
struct Spent {
    files: usize,
    bytes: u64,
    /// The file budget ran out (said once).
    exhausted: bool,
    /// Accounts, forwards and identities reported, and left out for the item budget.
    items: [usize; 3],
    dropped: [usize; 3],
}

/// One user's view of the device for the client readers: reads the user's files and records
/// what they find, with `client` and `user` filled in and errors named by device path.
pub struct Probe<'a> {
    pub root: &'a Root,
    pub user: &'a User,
    out: &'a mut Collected<MailSettings>,
    spent: Spent,
}

/// A delivery-rule file (a Sieve script or an include, a ~/.forward) of the user `uid`, read
/// as the mail system would: through the safe reader, only if the user could read it, capped
/// at [`MAX_FILE_BYTES`]. Not counted against the probe's budgets: the readers bound how many
/// they load themselves (Pigeonhole's limits).
pub(crate) fn read_rule_file(
    root: &Root,
    path: &Path,
    uid: u32,
) -> Result<Option<Vec<u8>>, ReadError> {
    let Some(opened) = userfile::open(root, path)? else {
        return Ok(None);
    };
    opened.readable_by(uid)?;
    opened.read_capped(MAX_FILE_BYTES).map(Some)
}

impl<'a> Probe<'a> {
    pub fn new(root: &'a Root, user: &'a User, out: &'a mut Collected<MailSettings>) -> Self {
        Self {
            root,
            user,
            out,
            spent: Spent::default(),
        }
    }

    /// Says what the user's budgets left out. Call once, after the last client.
    pub fn finish(mut self) {
        let home = PathBuf::from(&self.user.home);
        for (what, n) in ["accounts", "forwards", "identities"]
            .into_iter()
            .zip(self.spent.dropped)
        {
            if n > 0 {
                self.error(
                    &home,
                    format!(
                        "{} more {what} of this user not reported (at most {MAX_ITEMS_PER_USER})",
                        thousands(n)
                    ),
                );
            }
        }
    }

    /// Whether the user's file budget allows another read; says so once when it does not.
    fn may_read(&mut self) -> bool {
        if self.spent.files < MAX_FILES_PER_USER && self.spent.bytes < MAX_BYTES_PER_USER {
            return true;
        }
        if !self.spent.exhausted {
            self.spent.exhausted = true;
            let home = PathBuf::from(&self.user.home);
            self.error(
                &home,
                format!(
                    "more than {} files or {} MiB of mail settings: the rest of this user's files were not read",
                    thousands(MAX_FILES_PER_USER),
                    MAX_BYTES_PER_USER >> 20
                ),
            );
        }
        false
    }

    /// The user's file at `path`, if the user could read it: `Ok(None)` when it does not exist.
    fn read_user_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
        self.spent.files += 1;
        let Some(opened) = userfile::open(self.root, path)? else {
            return Ok(None);
        };
        opened.readable_by(self.user.uid)?;
        let bytes = opened.read_capped(MAX_FILE_BYTES)?;
        self.spent.bytes += bytes.len() as u64;
        Ok(Some(bytes))
    }

    /// The file's bytes; `None` when it does not exist or could not be read (then recorded).
    pub fn read(&mut self, path: &Path) -> Option<Vec<u8>> {
        if !self.may_read() {
            return None;
        }
        match self.read_user_file(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// Like [`Probe::read`], but a missing file is an error too, with `missing` as message.
    pub fn read_expected(&mut self, path: &Path, missing: &str) -> Option<Vec<u8>> {
        if !self.may_read() {
            return None;
        }
        match self.read_user_file(path) {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) => {
                self.error(path, missing);
                None
            }
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// The entries of the user's directory `dir` as device paths, sorted; empty when it does
    /// not exist. At most [`MAX_DIR_ENTRIES`] (more are said).
    pub fn list(&mut self, dir: &Path) -> Vec<PathBuf> {
        let listing = match userfile::open_dir(self.root, dir) {
            Ok(Some(h)) => h.list(MAX_DIR_ENTRIES),
            Ok(None) => return Vec::new(),
            Err(e) => Err(e),
        };
        match listing {
            Ok(l) => {
                if l.truncated {
                    self.error(dir, userfile::too_many_entries(MAX_DIR_ENTRIES));
                }
                l.entries.into_iter().map(|e| dir.join(e.raw)).collect()
            }
            Err(e) => {
                self.error(dir, e);
                Vec::new()
            }
        }
    }

    /// Reads an INI file; its problems are recorded, and its sections kept.
    pub fn read_ini(&mut self, path: &Path, comments: &[char]) -> Option<ini::Ini> {
        let bytes = self.read(path)?;
        let parsed = ini::parse_ini(&text::decode(&bytes), comments);
        self.problems(path, parsed.problems);
        Some(parsed.value)
    }

    pub fn error(&mut self, path: &Path, message: impl ToString) {
        self.out
            .error(SectionKind::Mail, path.display().to_string(), message);
    }

    /// Records a parser's problems as errors of the file at `path`: the first
    /// [`MAX_PROBLEMS_PER_FILE`], then how many more there were.
    pub fn problems(&mut self, path: &Path, problems: Vec<Problem>) {
        let more = problems.len().saturating_sub(MAX_PROBLEMS_PER_FILE);
        for p in problems.into_iter().take(MAX_PROBLEMS_PER_FILE) {
            self.error(path, p);
        }
        if more > 0 {
            self.error(
                path,
                format!("and {} more problems in this file", thousands(more)),
            );
        }
    }

    /// Counts an item of kind `i` (0 accounts, 1 forwards, 2 identities) against the user's
    /// budget: `false` when it is over and the item is left out (counted for [`Probe::finish`]).
    fn count(&mut self, i: usize) -> bool {
        if self.spent.items[i] < MAX_ITEMS_PER_USER {
            self.spent.items[i] += 1;
            true
        } else {
            self.spent.dropped[i] += 1;
            false
        }
    }

    pub fn account(
        &mut self,
        client: &str,
        address: String,
        host: String,
        port: Option<i32>,
        security: MailSecurity,
        protocol: String,
    ) {
        if !self.count(0) {
            return;
        }
        self.out.value.accounts.push(MailAccount {
            client: client.to_string(),
            user: self.user.name.clone(),
            address: field(address),
            host: field(host),
            port: port.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            security,
            protocol: field(protocol),
        });
    }

    pub fn forward(
        &mut self,
        client: &str,
        rule: String,
        enabled: bool,
        target: String,
        kind: ForwardKind,
        keeps_copy: bool,
    ) {
        if !self.count(1) {
            return;
        }
        self.out.value.forwards.push(MailForward {
            client: client.to_string(),
            user: self.user.name.clone(),
            rule: field(rule),
            enabled,
            target: field(target),
            kind,
            keeps_copy,
            problem: String::new(),
        });
    }

    /// An enabled forward with `problem` saying what the reader is not sure of (may be empty).
    fn forward_with_problem(
        &mut self,
        client: &str,
        rule: String,
        target: String,
        kind: ForwardKind,
        keeps_copy: bool,
        problem: String,
    ) {
        self.forward(client, rule, true, target, kind, keeps_copy);
        if let Some(f) = self.out.value.forwards.last_mut() {
            f.problem = problem;
        }
    }

    /// Records what a delivery-rule reader found: its problems as errors of their files, each
    /// delivery as a forward whose rule is `label(file)` and the conditions on the way, and an
    /// unsure reading as a forward with no target and the reason ("may forward"), of
    /// `unsure_kind`.
    pub fn deliveries(
        &mut self,
        client: &str,
        unsure_kind: ForwardKind,
        label: &dyn Fn(&str) -> String,
        reading: Reading,
    ) {
        for (file, p) in reading.problems {
            self.error(Path::new(&file), p);
        }
        for d in reading.deliveries {
            let rule = if d.conditions.is_empty() {
                label(&d.file)
            } else {
                format!("{}: {}", label(&d.file), d.conditions.join(" / "))
            };
            self.forward_with_problem(client, rule, d.target, d.kind, d.keeps_copy, d.problem);
        }
        if let Some((file, p)) = reading.unsure {
            let problem = format!("rule not understood, may forward: {p}");
            self.forward_with_problem(
                client,
                label(&file),
                String::new(),
                unsure_kind,
                false,
                problem,
            );
        }
    }

    pub fn identity(&mut self, client: &str, address: String, name: String, signature: String) {
        if !self.count(2) {
            return;
        }
        self.out.value.identities.push(MailIdentity {
            client: client.to_string(),
            user: self.user.name.clone(),
            address: field(address),
            signature: field(signature),
            name: field(name),
        });
    }
}
