//! Reader for Thunderbird's message filter files (`msgFilterRules.dat` in each server's
//! directory), following `nsMsgFilterList::LoadTextFilters` in comm-central:
//!
//! - the file is a run of `attribute="value"` pairs separated by whitespace; attribute names
//!   are matched case-insensitively: `version`, `logging`, `name`, `enabled`, `description`,
//!   `type`, `scriptName`, `action`, `actionValue`, `condition`, `customId`;
//! - a value opens with `"` and ends at the next unescaped `"` or at a line end; `\"` is a
//!   quote, `\\` a backslash, any other backslash stays as written (Thunderbird takes the
//!   character after a backslash pair or a lone backslash unchecked, even a quote; so do we);
//!   a value the end of the file cuts off comes out empty in Thunderbird, and here too;
//! - `name` starts a filter; `enabled="yes"` enables it; every `action` adds an action, and the
//!   `actionValue` / `customId` that follow belong to that action (a filter can forward to
//!   several addresses and do other things too);
//! - an unknown attribute or an action Thunderbird does not know makes the filter
//!   "unparseable", and Thunderbird disables such a filter;
//! - a value that does not open with `"` is a parse error, after which Thunderbird drops the
//!   whole list (and, with a window open, backs the file up and empties it). No filter of such
//!   a file runs, so none is returned.

use super::text::{Parsed, Problem};

/// Action names Thunderbird writes (`ruleActionsTable` in nsMsgFilter.cpp).
const KNOWN_ACTIONS: &[&str] = &[
    "Move to folder",
    "Copy to folder",
    "Change priority",
    "Delete",
    "Mark read",
    "Ignore thread",
    "Ignore subthread",
    "Watch thread",
    "Mark flagged",
    "Reply",
    "Forward",
    "Stop execution",
    "Delete from Pop3 server",
    "Leave on Pop3 server",
    "JunkScore",
    "Fetch body from Pop3Server",
    "AddTag",
    "Mark unread",
    "Custom",
];

/// `nsMsgFilterType::Manual`: the filter runs when the user starts it.
pub const FILTER_TYPE_MANUAL: i64 = 0x10;
/// What `nsMsgFilter` starts with when a filter has no `type`: InboxRule | Manual.
pub const FILTER_TYPE_DEFAULT: i64 = 0x01 | FILTER_TYPE_MANUAL;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilterAction {
    /// The action's filing name, e.g. `Forward`, `Custom`.
    pub kind: String,
    pub value: String,
    /// For `Custom` actions: the add-on's action id (`addon@id#action`).
    pub custom_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub name: String,
    /// The file's `enabled` flag, after Thunderbird's rule that unparseable filters are off.
    pub enabled: bool,
    /// The `type` bit set (when the filter runs), `FILTER_TYPE_DEFAULT` when absent.
    pub filter_type: i64,
    pub actions: Vec<FilterAction>,
    pub condition: String,
    pub unparseable: bool,
}

impl Filter {
    /// Whether the filter ever runs without the user starting it: any trigger bit besides
    /// Manual (incoming mail, after junk classification, after sending, on archiving, on a
    /// timer).
    pub fn runs_by_itself(&self) -> bool {
        self.filter_type & !FILTER_TYPE_MANUAL != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    Version,
    Logging,
    Name,
    Enabled,
    Description,
    Type,
    ScriptName,
    Action,
    ActionValue,
    Condition,
    CustomId,
    Unknown,
}

fn attr(name: &str) -> Attr {
    match name.to_ascii_lowercase().as_str() {
        "version" => Attr::Version,
        "logging" => Attr::Logging,
        "name" => Attr::Name,
        "enabled" => Attr::Enabled,
        "description" => Attr::Description,
        "type" => Attr::Type,
        "scriptname" => Attr::ScriptName,
        "action" => Attr::Action,
        "actionvalue" => Attr::ActionValue,
        "condition" => Attr::Condition,
        "customid" => Attr::CustomId,
        _ => Attr::Unknown,
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.buf.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The next byte that is not ASCII whitespace.
    fn next_non_space(&mut self) -> Option<u8> {
        loop {
            let c = self.next()?;
            if !c.is_ascii_whitespace() {
                return Some(c);
            }
        }
    }
}

/// Reads one value after its opening quote, byte for byte as `nsMsgFilterList::LoadValue`
/// does. Returns the value and whether it ended properly. Thunderbird only keeps a value that
/// ends at a quote or a line end: one cut off by the end of the file comes out empty.
fn read_value(cur: &mut Cursor<'_>) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut c = cur.next();
    loop {
        match c {
            Some(b'\\') => match cur.next() {
                Some(b'"') => c = Some(b'"'),
                Some(b'\\') => {
                    out.push(b'\\');
                    c = cur.next();
                }
                // A lone backslash stays, and the character after it is taken unchecked.
                other => {
                    out.push(b'\\');
                    c = other;
                }
            },
            // Only the very first read can end here: the file ends right after the quote.
            None => return (out, false),
            Some(b'"' | b'\n' | b'\r') => return (out, true),
            Some(_) => {}
        }
        // Thunderbird appends this character without looking at it again.
        match c {
            Some(ch) => out.push(ch),
            None => return (Vec::new(), false),
        }
        c = cur.next();
        if c.is_none() {
            return (Vec::new(), false);
        }
    }
}

/// Reads a filter file. See the module documentation for what Thunderbird does with each
/// kind of damage; a value cut off by the end of the file is reported (and, as in
/// Thunderbird, empty).
pub fn parse_filter_rules(bytes: &[u8]) -> Parsed<Vec<Filter>> {
    let mut out = Parsed::<Vec<Filter>>::default();
    let mut cur = Cursor {
        buf: bytes,
        pos: 0,
        line: 1,
    };
    // Each round: an attribute name, up to whitespace or '=', then its value.
    while let Some(first) = cur.next_non_space() {
        let line = cur.line;
        let mut name = vec![first];
        let mut ended = false;
        if first != b'=' {
            loop {
                match cur.next() {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(b'=') => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(c) => name.push(c),
                }
            }
        } else {
            name.clear();
        }
        if ended {
            out.problems.push(Problem::new(
                line,
                "file ends inside an attribute name (truncated?)",
            ));
            break;
        }
        if cur.next_non_space() != Some(b'"') {
            out.problems.push(Problem::new(
                line,
                "expected a quoted value: Thunderbird rejects the whole filter list, \
                 so none of its filters run",
            ));
            out.value.clear();
            return out;
        }
        let (raw, closed) = read_value(&mut cur);
        if !closed {
            out.problems
                .push(Problem::new(line, "file ends inside a value (truncated?)"));
        }
        let value = String::from_utf8_lossy(&raw).into_owned();
        apply(&mut out.value, attr(&String::from_utf8_lossy(&name)), value);
        if !closed {
            break;
        }
    }
    for f in &mut out.value {
        if f.unparseable {
            f.enabled = false;
        }
    }
    out
}

fn apply(filters: &mut Vec<Filter>, attr: Attr, value: String) {
    if attr == Attr::Name {
        filters.push(Filter {
            name: value,
            filter_type: FILTER_TYPE_DEFAULT,
            ..Filter::default()
        });
        return;
    }
    // Everything else belongs to the current filter; before the first one it is the list's
    // own header (version, logging), which says nothing we report.
    let Some(f) = filters.last_mut() else {
        return;
    };
    match attr {
        Attr::Enabled => f.enabled = value == "yes",
        Attr::Type => {
            // A non-number reads as 0 in Thunderbird (nsCString::ToInteger fails to 0).
            f.filter_type = value.trim().parse::<i64>().unwrap_or(0);
        }
        Attr::Action => {
            if KNOWN_ACTIONS.contains(&value.as_str()) {
                f.actions.push(FilterAction {
                    kind: value,
                    ..FilterAction::default()
                });
            } else {
                f.unparseable = true;
            }
        }
        Attr::ActionValue => {
            if let Some(a) = f.actions.last_mut() {
                a.value = value;
            }
        }
        Attr::CustomId => {
            if let Some(a) = f.actions.last_mut() {
                a.custom_id = value;
            }
        }
        Attr::Condition => f.condition = value,
        Attr::Unknown => f.unparseable = true,
        Attr::Version | Attr::Logging | Attr::Description | Attr::ScriptName | Attr::Name => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "version=\"9\"\r\n\
        logging=\"no\"\r\n\
        name=\"Till \\\"privat\\\" Gmail\"\r\n\
        enabled=\"yes\"\r\n\
        type=\"17\"\r\n\
        action=\"Forward\"\r\n\
        actionValue=\"asa.oberg@gmail.com\"\r\n\
        action=\"Mark read\"\r\n\
        action=\"Forward\"\r\n\
        actionValue=\"Åsa <asa@outlook.com>\"\r\n\
        condition=\"AND (from,contains,chef@sorsele.se)\"\r\n\
        name=\"Manuell\"\r\n\
        enabled=\"no\"\r\n\
        type=\"16\"\r\n\
        action=\"Custom\"\r\n\
        customId=\"filtaquilla@mesquilla.com#runFile\"\r\n\
        actionValue=\"/usr/bin/x\"\r\n\
        condition=\"ALL\"\r\n";

    #[test]
    fn reads_filters_and_their_actions() {
        let got = parse_filter_rules(SAMPLE.as_bytes());
        assert_eq!(got.problems, vec![]);
        let f = &got.value;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "Till \"privat\" Gmail");
        assert!(f[0].enabled);
        assert_eq!(f[0].filter_type, 17);
        assert!(f[0].runs_by_itself());
        let forwards: Vec<&str> = f[0]
            .actions
            .iter()
            .filter(|a| a.kind == "Forward")
            .map(|a| a.value.as_str())
            .collect();
        assert_eq!(
            forwards,
            vec!["asa.oberg@gmail.com", "Åsa <asa@outlook.com>"]
        );
        assert_eq!(f[0].condition, "AND (from,contains,chef@sorsele.se)");
        assert!(!f[1].enabled);
        assert!(!f[1].runs_by_itself());
        assert_eq!(
            f[1].actions[0].custom_id,
            "filtaquilla@mesquilla.com#runFile"
        );
        assert_eq!(f[1].actions[0].value, "/usr/bin/x");
    }

    #[test]
    fn unknown_actions_disable_the_filter() {
        let got = parse_filter_rules(
            b"name=\"x\" enabled=\"yes\" action=\"Teleport\" action=\"Forward\" actionValue=\"a@b\"",
        );
        assert!(!got.value[0].enabled);
        assert!(got.value[0].unparseable);
        assert_eq!(got.value[0].actions.len(), 1);
    }

    #[test]
    fn a_missing_type_means_incoming_and_manual() {
        let got = parse_filter_rules(b"name=\"x\"\nenabled=\"yes\"\n");
        assert_eq!(got.value[0].filter_type, FILTER_TYPE_DEFAULT);
        assert!(got.value[0].runs_by_itself());
    }

    #[test]
    fn truncation_keeps_what_thunderbird_keeps() {
        let got = parse_filter_rules(
            b"version=\"9\"\nname=\"a\"\nenabled=\"yes\"\naction=\"Forward\"\nactionValue=\"x@gma",
        );
        // Thunderbird reads the cut-off value as empty: that forward goes nowhere.
        assert_eq!(got.value[0].actions[0].value, "");
        assert_eq!(got.problems.len(), 1);
        assert_eq!(got.problems[0].line, 5);
    }

    #[test]
    fn an_unquoted_value_loses_the_whole_list() {
        let got = parse_filter_rules(b"name=\"a\"\nenabled=\"yes\"\naction=Forward\n");
        assert!(got.value.is_empty());
        assert_eq!(got.problems[0].line, 3);
    }

    #[test]
    fn backslashes_follow_thunderbird() {
        let got = parse_filter_rules(b"name=\"a\\\\\"b\\x\\\"c\"");
        // `\\` then the quote taken unchecked, `b`, `\x` kept, `\"` a quote, `c`.
        assert_eq!(got.value[0].name, "a\\\"b\\x\"c");
    }

    #[test]
    fn garbage_never_panics() {
        for input in [
            &b""[..],
            b"=",
            b"\"",
            b"name",
            b"\xff\xfe=\"\\",
            b"a=\"\\\\",
        ] {
            let _ = parse_filter_rules(input);
        }
    }
}
