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
//! themselves do, and everything else stands. Files are read only if the user could read them
//! (see [`fs`]).
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
pub mod fs;
pub mod ini;
pub mod prefs;
pub mod rules;
pub mod sieve;
pub mod text;
pub mod thunderbird;

use super::users::{User, local_users};
use super::{Collected, Root};
use rules::Reading;
use std::path::Path;
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
        let mut probe = Probe {
            root,
            user,
            out: &mut out,
        };
        thunderbird::collect(&mut probe);
        evolution::collect(&mut probe);
        sieve::collect(&mut probe);
        dot_forward::collect(&mut probe);
    }
    out
}

/// One user's view of the device for the client readers: reads the user's files and records
/// what they find, with `client` and `user` filled in and errors named by device path.
pub struct Probe<'a> {
    pub root: &'a Root,
    pub user: &'a User,
    out: &'a mut Collected<MailSettings>,
}

impl Probe<'_> {
    /// The file's bytes; `None` when it does not exist or could not be read (then recorded).
    pub fn read(&mut self, path: &Path) -> Option<Vec<u8>> {
        match fs::read_user_file(self.root, path, self.user.uid) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// Like [`Probe::read`], but a missing file is an error too, with `missing` as message.
    pub fn read_expected(&mut self, path: &Path, missing: &str) -> Option<Vec<u8>> {
        match fs::read_user_file(self.root, path, self.user.uid) {
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

    /// Records a parser's problems as errors of the file at `path`.
    pub fn problems(&mut self, path: &Path, problems: Vec<Problem>) {
        for p in problems {
            self.error(path, p);
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
        self.out.value.accounts.push(MailAccount {
            client: client.to_string(),
            user: self.user.name.clone(),
            address,
            host,
            port: port.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            security,
            protocol,
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
        self.out.value.forwards.push(MailForward {
            client: client.to_string(),
            user: self.user.name.clone(),
            rule,
            enabled,
            target,
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
        self.out.value.identities.push(MailIdentity {
            client: client.to_string(),
            user: self.user.name.clone(),
            address,
            signature,
            name,
        });
    }
}
