//! What the readers of server-side delivery rules find (the Sieve script, `~/.forward` as an
//! address list, an Exim filter or a Sieve filter), before the probe reports it: every place a
//! rule can send mail, the conditions on the way there, the problems per file, and whether the
//! reader is left unsure that it saw every forward.
//!
//! "Unsure" is what keeps a reader from being silent: a construct it does not understand in a
//! file that also forwards, a file the mail system would refuse but that mentions forwarding,
//! or a file over the size cap becomes one `forwards[]` entry with an empty target and the
//! reason in `problem` ("rule not understood, may forward"), which the policy makes a notice.

use super::text::Problem;
use vakt_proto::model::ForwardKind;

/// Condition text kept per level in a rule's description.
pub const MAX_CONDITION_CHARS: usize = 200;

/// One delivery a rule makes (or may make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The device path of the file the command is in (an included script names itself).
    pub file: String,
    pub target: String,
    pub kind: ForwardKind,
    /// The message also stays in the mailbox (`:copy`, `keep`, `unseen`, ...).
    pub keeps_copy: bool,
    /// The conditions on the way to the command, outermost first.
    pub conditions: Vec<String>,
    pub line: usize,
    /// Why the target is not known for sure (it depends on the message, is not an address as
    /// written, ...); empty when it is.
    pub problem: String,
}

/// What a reader made of one rule file and the files it pulled in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reading {
    pub deliveries: Vec<Delivery>,
    /// Problems, each with the device path of the file it is in.
    pub problems: Vec<(String, Problem)>,
    /// Set when the file may forward in a way the reader could not see: the file and why.
    pub unsure: Option<(String, Problem)>,
}

impl Reading {
    pub fn problem(&mut self, file: &str, problem: Problem) {
        self.problems.push((file.to_string(), problem));
    }

    /// Drops repeated deliveries (a script included twice on one path reports once), keeping
    /// the first of each.
    pub fn dedup(&mut self) {
        let mut seen = std::collections::BTreeSet::new();
        self.deliveries.retain(|d| {
            seen.insert((
                d.file.clone(),
                d.target.clone(),
                d.conditions.clone(),
                d.problem.clone(),
                d.keeps_copy,
                d.line,
            ))
        });
    }
}

/// The conditions of a value assigned under `earlier` and used under `later`: the earlier ones
/// that are not already on the way to the use, then the later ones. A value set in an enclosing
/// block adds nothing; one set in a branch adds that branch.
pub fn merge_conditions(earlier: &[String], later: &[String]) -> Vec<String> {
    let mut out: Vec<String> = earlier
        .iter()
        .filter(|c| !later.contains(c))
        .cloned()
        .collect();
    out.extend(later.iter().cloned());
    out
}

/// Whether `text` holds any of `words` as a whole word (letters, digits, `_` and `.` make up a
/// word), ignoring case: how a file the reader could not parse is judged to mention forwarding.
pub fn mentions_any(text: &str, words: &[&str]) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .any(|w| words.iter().any(|x| w.eq_ignore_ascii_case(x)))
}

/// Whether a target as normalised reads as a mail address (`local@domain`) or a local user
/// name; anything else (`${fwd}`, `x$y`) is no address the mail system would accept as written.
pub fn looks_like_address(s: &str) -> bool {
    let local_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| !c.is_control() && !c.is_whitespace() && !"${}()<>,;\\".contains(c))
    };
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            (local_ok(local) || (local.starts_with('"') && local.ends_with('"') && local.len() > 1))
                && !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
        }
        None => {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
                && !s.is_empty()
        }
    }
}

/// A delivery with no conditions, in `file` at `line`.
pub fn delivery(file: &str, line: usize, target: String, kind: ForwardKind) -> Delivery {
    Delivery {
        file: file.to_string(),
        target,
        kind,
        keeps_copy: false,
        conditions: Vec::new(),
        line,
        problem: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_merge_without_repeats() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(merge_conditions(&s(&["if a"]), &s(&[])), s(&["if a"]));
        assert_eq!(
            merge_conditions(&s(&["if a"]), &s(&["if a", "if b"])),
            s(&["if a", "if b"])
        );
        assert_eq!(
            merge_conditions(&s(&["if a"]), &s(&["else"])),
            s(&["if a", "else"])
        );
    }

    #[test]
    fn words_and_addresses() {
        assert!(mentions_any("if x {\n  Redirect \"a\";", &["redirect"]));
        assert!(!mentions_any("redirected", &["redirect"]));
        assert!(looks_like_address("anna@gmail.com"));
        assert!(looks_like_address("\"anna berg\"@gmail.com"));
        assert!(looks_like_address("bo"));
        assert!(looks_like_address("anna@gmäil.se"));
        assert!(!looks_like_address("${fwd}"));
        assert!(!looks_like_address("anna@${dom}"));
        assert!(!looks_like_address("x${hex:40}gmail.com"));
        assert!(!looks_like_address(""));
    }
}
