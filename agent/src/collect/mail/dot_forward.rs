//! `~/.forward`: where the mail system's local delivery (sendmail, Postfix `local`, Exim)
//! sends the user's mail instead of, or besides, the mailbox.
//!
//! Format (aliases(5) right-hand side, forward(5)): destinations separated by commas or
//! lines; a line whose first non-blank character is `#` is a comment; a line starting with
//! blanks continues the one before, as does a backslash at the end of a line; double quotes
//! group a destination holding blanks or commas (`"|/usr/bin/vacation anna"`). A destination
//! is an address, a local user, `|command`, `/file`, or `:include:/file`; `\user` delivers to
//! that user's own mailbox, bypassing further forwarding: for the file's owner that is the
//! "keep a local copy" entry.
//!
//! Each destination other than the owner's own `\user` is reported (kind `dot-forward`) with
//! `keeps_copy` when the owner's `\user` is in the file; programs, files and includes are
//! reported as written, since where they send mail cannot be seen from here.

use super::Probe;
use super::text::{Parsed, Problem, bare_address, decode};
use std::path::PathBuf;
use vakt_proto::model::ForwardKind;

pub const CLIENT: &str = "dot-forward";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DotForward {
    /// Destinations in file order, as written (quotes removed).
    pub targets: Vec<String>,
    /// The owner's `\user` entry is present: mail is also delivered to the mailbox.
    pub keeps_copy: bool,
}

/// Joins continuation lines into logical lines, skipping comments. Each logical line keeps the
/// number of the line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut continues = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let blank_start = line.starts_with([' ', '\t']);
        let trimmed = line.trim();
        if trimmed.starts_with('#') && !continues {
            continue;
        }
        let (body, backslash) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        match out.last_mut() {
            Some(last) if (continues || blank_start) && !body.is_empty() => {
                last.1.push(' ');
                last.1.push_str(body);
            }
            _ if body.is_empty() => {}
            _ => out.push((i + 1, body.to_string())),
        }
        continues = backslash;
    }
    out
}

/// Splits a logical line at commas outside double quotes; quotes are removed.
fn split_destinations(line: &str, line_no: usize, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    if quoted {
        problems.push(Problem::new(line_no, "unterminated quote"));
    }
    out.push(cur);
    out.into_iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// Reads a `.forward` file of `owner`.
pub fn parse_dot_forward(text: &str, owner: &str) -> Parsed<DotForward> {
    let mut out = Parsed::<DotForward>::default();
    for (line_no, line) in logical_lines(text) {
        for d in split_destinations(&line, line_no, &mut out.problems) {
            match d.strip_prefix('\\') {
                Some(name) if name.trim() == owner => out.value.keeps_copy = true,
                // Another user's mailbox, directly.
                Some(name) => out.value.targets.push(name.trim().to_string()),
                None if d.starts_with(['|', '/', ':']) => out.value.targets.push(d),
                None => out.value.targets.push(bare_address(&d)),
            }
        }
    }
    out
}

/// Reports the destinations of the user's `~/.forward`.
pub fn collect(probe: &mut Probe<'_>) {
    let path = PathBuf::from(&probe.user.home).join(".forward");
    let Some(bytes) = probe.read(&path) else {
        return;
    };
    let owner = probe.user.name.clone();
    let parsed = parse_dot_forward(&decode(&bytes), &owner);
    probe.problems(&path, parsed.problems);
    for target in parsed.value.targets {
        probe.forward(
            CLIENT,
            "~/.forward".to_string(),
            true,
            target,
            ForwardKind::DotForward,
            parsed.value.keeps_copy,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_destinations_copies_and_comments() {
        let text = "# vidarebefordran\r\n\
                    \\anna, anna.privat@gmail.com\r\n\
                    \"|/usr/bin/vacation anna\"\r\n\
                    Åsa Öberg <asa@outlook.com>,\r\n\
                    \tbo@sorsele.se\r\n\
                    /var/mail/anna.copy, \\bo\r\n\
                    :include:/etc/mail/list \\\r\n\
                    , extra@x.se\r\n";
        let got = parse_dot_forward(text, "anna");
        assert_eq!(got.problems, vec![]);
        assert!(got.value.keeps_copy);
        assert_eq!(
            got.value.targets,
            vec![
                "anna.privat@gmail.com",
                "|/usr/bin/vacation anna",
                "asa@outlook.com",
                "bo@sorsele.se",
                "/var/mail/anna.copy",
                "bo",
                ":include:/etc/mail/list",
                "extra@x.se",
            ]
        );
    }

    #[test]
    fn without_the_owner_no_copy_is_kept() {
        let got = parse_dot_forward("x@y.se\n\\bo\n", "anna");
        assert!(!got.value.keeps_copy);
        assert_eq!(got.value.targets, vec!["x@y.se", "bo"]);
    }

    #[test]
    fn unterminated_quotes_are_reported() {
        let got = parse_dot_forward("ok@x.se\n\"|prog, more\n", "anna");
        assert_eq!(got.problems, vec![Problem::new(2, "unterminated quote")]);
        assert_eq!(got.value.targets, vec!["ok@x.se", "|prog, more"]);
    }
}
