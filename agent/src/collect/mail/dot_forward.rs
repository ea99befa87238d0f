//! `~/.forward`: where the mail system's local delivery (sendmail, Postfix `local`, Exim)
//! sends the user's mail instead of, or besides, the mailbox.
//!
//! The first line decides the grammar, as Exim decides it: apart from leading white space, a
//! file starting `# Exim filter` is an Exim filter ([`exim_filter`](super::exim_filter)) and
//! `# Sieve filter` a Sieve script ([`sieve`](super::sieve), includes not available), blanks
//! and letter case in that line ignored. Any other file is a list of addresses (aliases(5)
//! right-hand side, forward(5)), which sendmail and Postfix read the same way:
//!
//! - destinations separated by commas or lines; a line whose first non-blank character is `#`
//!   is a comment, and so is a `#` after a blank outside quotes to the end of its line; a line
//!   starting with blanks continues the one before, as does a backslash at its end; double
//!   quotes group a destination holding blanks or commas (`"|/usr/bin/vacation anna"`);
//! - a destination is an address (normalised as RFC 5322 reads it, comments and blanks
//!   dropped; blank-separated addresses are each their own), a local user, `|command` (kind
//!   `pipe`), `/file` (kind `file`), `:include:/file` (its addresses are not read here: the
//!   delivery says so in its problem), or Exim's `:blackhole:`, `:fail:`, `:defer:` and
//!   `:unknown:`, which deliver nothing; `\user` delivers to that user's own mailbox, bypassing
//!   further forwarding: for the file's owner that is the "keep a local copy" entry.
//!
//! Each destination other than the owner's own `\user` is reported (kind `dot-forward`) with
//! `keeps_copy` when the owner's `\user` is in the file. A file over the agent's size cap is
//! not read, and is reported as a rule that may forward.

use super::read_rule_file;
use super::rules::{Reading, delivery};
use super::text::{Problem, decode, quoting, split_addresses};
use super::{Probe, exim_filter, sieve};
use crate::collect::userfile::ReadError;
use std::path::PathBuf;
use vakt_proto::model::ForwardKind;

pub const CLIENT: &str = "dot-forward";

/// Which grammar a `~/.forward` is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Addresses,
    EximFilter,
    SieveFilter,
}

impl Format {
    /// How a rule from such a file is named.
    pub fn label(self) -> &'static str {
        match self {
            Self::Addresses => "~/.forward",
            Self::EximFilter => "~/.forward (Exim filter)",
            Self::SieveFilter => "~/.forward (Sieve filter)",
        }
    }
}

/// The grammar of a file, from its first line (Exim's rule: `#`, then `Exim filter` or
/// `Sieve filter` in any case and spacing, the rest of the line a comment).
pub fn format_of(text: &str) -> Format {
    let first = text.trim_start().lines().next().unwrap_or_default();
    let Some(rest) = first.strip_prefix('#') else {
        return Format::Addresses;
    };
    let compact: String = rest
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase();
    if compact.starts_with("eximfilter") {
        Format::EximFilter
    } else if compact.starts_with("sievefilter") {
        Format::SieveFilter
    } else {
        Format::Addresses
    }
}

/// Reads a `~/.forward` of `owner` (home `home`) at device path `file`, in its grammar.
pub fn read(file: &str, text: &str, owner: &str, home: &str) -> (Format, Reading) {
    let format = format_of(text);
    let reading = match format {
        Format::Addresses => read_addresses(file, text, owner),
        Format::EximFilter => exim_filter::read(file, text, owner, home),
        // Exim's Sieve has no include: a script asking for one is refused there.
        Format::SieveFilter => sieve::evaluate(file, text, &mut |name| sieve::Source::Missing {
            file: format!("{name}: Exim's Sieve has no include"),
        }),
    };
    (format, reading)
}

/// The line with a `#` comment that follows a blank (outside double quotes) cut off.
fn strip_comment(line: &str) -> &str {
    let mut after_blank = true;
    for (i, c, outside) in quoting(line) {
        if c == '#' && outside && after_blank {
            return &line[..i];
        }
        after_blank = c == ' ' || c == '\t';
    }
    line
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
        let trimmed = strip_comment(trimmed).trim_end();
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

/// Exim's special items, which deliver nothing.
const SPECIALS: &[&str] = &[":blackhole:", ":fail:", ":defer:", ":unknown:"];

/// Reads a `.forward` of `owner` that is a list of addresses.
pub fn read_addresses(file: &str, text: &str, owner: &str) -> Reading {
    let mut out = Reading::default();
    let mut problems = Vec::new();
    let mut keeps_copy = false;
    for (line_no, line) in logical_lines(text) {
        for d in split_destinations(&line, line_no, &mut problems) {
            let lower = d.to_ascii_lowercase();
            let (target, kind, problem) = match d.strip_prefix('\\') {
                Some(name) if name.trim() == owner => {
                    keeps_copy = true;
                    continue;
                }
                // Another user's mailbox, directly.
                Some(name) => (name.trim().to_string(), ForwardKind::DotForward, ""),
                None if SPECIALS.iter().any(|s| lower.starts_with(s)) => continue,
                None if lower.starts_with(":include:") => (
                    d.clone(),
                    ForwardKind::DotForward,
                    "the addresses in the included file are not read here",
                ),
                None if d.starts_with('|') => (d.clone(), ForwardKind::Pipe, ""),
                None if d.starts_with('/') => (d.clone(), ForwardKind::File, ""),
                None => {
                    for address in split_addresses(&d) {
                        out.deliveries.push(delivery(
                            file,
                            line_no,
                            address,
                            ForwardKind::DotForward,
                        ));
                    }
                    continue;
                }
            };
            let mut x = delivery(file, line_no, target, kind);
            x.problem = problem.to_string();
            out.deliveries.push(x);
        }
    }
    for d in &mut out.deliveries {
        d.keeps_copy = keeps_copy;
    }
    out.problems = problems
        .into_iter()
        .map(|p| (file.to_string(), p))
        .collect();
    out
}

/// Reports the destinations of the user's `~/.forward`.
pub fn collect(probe: &mut Probe<'_>) {
    let path = PathBuf::from(&probe.user.home).join(".forward");
    let file = path.display().to_string();
    let (format, reading) = match read_rule_file(probe.root, &path, probe.user.uid) {
        Ok(None) => return,
        Ok(Some(bytes)) => read(&file, &decode(&bytes), &probe.user.name, &probe.user.home),
        Err(e) => {
            let p = Problem::new(0, e.to_string());
            // A file larger than the agent reads can still be read by the mail system.
            let unsure = matches!(e, ReadError::TooLarge { .. }).then(|| (file.clone(), p.clone()));
            let reading = Reading {
                problems: vec![(file.clone(), p)],
                unsure,
                ..Reading::default()
            };
            (Format::Addresses, reading)
        }
    };
    probe.deliveries(
        CLIENT,
        ForwardKind::DotForward,
        &|_| format.label().to_string(),
        reading,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(r: &Reading) -> Vec<(&str, ForwardKind)> {
        r.deliveries
            .iter()
            .map(|d| (d.target.as_str(), d.kind))
            .collect()
    }

    #[test]
    fn reads_destinations_copies_and_comments() {
        use ForwardKind::*;
        let text = "# vidarebefordran\r\n\
                    \\anna, anna.privat@gmail.com\r\n\
                    \"|/usr/bin/vacation anna\"\r\n\
                    Åsa Öberg <asa@outlook.com>,\r\n\
                    \tbo@sorsele.se\r\n\
                    /var/mail/anna.copy, \\bo\r\n\
                    :include:/etc/mail/list \\\r\n\
                    , extra@x.se\r\n";
        let got = read_addresses("f", text, "anna");
        assert_eq!(got.problems, vec![]);
        assert!(got.deliveries.iter().all(|d| d.keeps_copy));
        assert_eq!(
            targets(&got),
            vec![
                ("anna.privat@gmail.com", DotForward),
                ("|/usr/bin/vacation anna", Pipe),
                ("asa@outlook.com", DotForward),
                ("bo@sorsele.se", DotForward),
                ("/var/mail/anna.copy", File),
                ("bo", DotForward),
                (":include:/etc/mail/list", DotForward),
                ("extra@x.se", DotForward),
            ]
        );
        assert_eq!(
            got.deliveries[6].problem,
            "the addresses in the included file are not read here"
        );
        assert_eq!(got.deliveries[3].line, 4);
    }

    #[test]
    fn without_the_owner_no_copy_is_kept() {
        let got = read_addresses("f", "x@y.se\n\\bo\n", "anna");
        assert!(got.deliveries.iter().all(|d| !d.keeps_copy));
        assert_eq!(
            targets(&got),
            vec![
                ("x@y.se", ForwardKind::DotForward),
                ("bo", ForwardKind::DotForward)
            ]
        );
    }

    #[test]
    fn unterminated_quotes_are_reported() {
        let got = read_addresses("f", "ok@x.se\n\"|prog, more\n", "anna");
        assert_eq!(
            got.problems,
            vec![("f".to_string(), Problem::new(2, "unterminated quote"))]
        );
        assert_eq!(
            targets(&got),
            vec![
                ("ok@x.se", ForwardKind::DotForward),
                ("|prog, more", ForwardKind::Pipe)
            ]
        );
    }

    #[test]
    fn trailing_comments_and_rfc_5322_forms() {
        let got = read_addresses(
            "f",
            "x@gmail.com # privat\n\"a#b\"@sorsele.se, y@outlook.com#not-a-comment\n\
             anna (privat) @ gmail . com\nx@gmail.com a@sorsele.se\n:blackhole:\n",
            "anna",
        );
        let t: Vec<&str> = got.deliveries.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(
            t,
            vec![
                "x@gmail.com",
                // Quotes group (and go); a `#` inside them is no comment.
                "a#b@sorsele.se",
                "y@outlook.com#not-a-comment",
                "anna@gmail.com",
                "x@gmail.com",
                "a@sorsele.se",
            ]
        );
    }

    #[test]
    fn the_first_line_picks_the_grammar() {
        for (text, format) in [
            ("# Exim filter\ndeliver x@gmail.com", Format::EximFilter),
            (
                "\n\n   #   EXIM   Filter  <<== do not edit\n",
                Format::EximFilter,
            ),
            ("#Eximfilter\n", Format::EximFilter),
            (
                "# Sieve filter\nredirect \"x@gmail.com\";",
                Format::SieveFilter,
            ),
            ("# Exim filters are nice\nx@gmail.com", Format::EximFilter),
            ("# my forward\nx@gmail.com", Format::Addresses),
            ("x@gmail.com\n# Exim filter", Format::Addresses),
            ("", Format::Addresses),
        ] {
            assert_eq!(format_of(text), format, "{text:?}");
        }
    }

    #[test]
    fn filters_are_read_with_their_grammar() {
        let (format, got) = read(
            "f",
            "# Exim filter\nif $h_subject: contains \"x\" then deliver x@gmail.com endif\n",
            "anna",
            "/home/anna",
        );
        assert_eq!(format, Format::EximFilter);
        assert_eq!(
            targets(&got),
            vec![("x@gmail.com", ForwardKind::DotForward)]
        );
        let (format, got) = read(
            "f",
            "# Sieve filter\nrequire \"copy\";\nredirect :copy \"x@gmail.com\";\n",
            "anna",
            "/home/anna",
        );
        assert_eq!(format, Format::SieveFilter);
        assert_eq!(targets(&got), vec![("x@gmail.com", ForwardKind::Redirect)]);
        assert!(got.deliveries[0].keeps_copy);
        let (_, got) = read(
            "f",
            "# Sieve filter\ninclude \"x\";\nredirect \"x@gmail.com\";\n",
            "anna",
            "/home/anna",
        );
        assert!(got.deliveries.is_empty(), "Exim refuses the include");
        assert!(got.unsure.is_some());
    }
}
