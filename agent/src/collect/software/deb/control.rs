//! The deb822 control-file syntax shared by the dpkg status file, Release files and `*.sources`
//! (Debian Policy 5.1): paragraphs of `Field: value` lines separated by blank lines, with
//! continuation lines starting with a space or tab.
//!
//! This is the general parser for the small files; the big package lists have their own fast
//! path in `packages.rs`. It borrows from the text, never panics, and reports each line it
//! cannot read instead of giving up on the file.

/// One `Field: value` of a paragraph, borrowed from the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    /// The value of the first line, trimmed. Continuation lines are in `rest`.
    pub value: &'a str,
    /// The raw continuation lines (with their leading space), newline-separated.
    pub rest: &'a str,
    /// 1-based line number of the field in the file.
    pub line: usize,
}

/// One paragraph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph<'a> {
    pub fields: Vec<Field<'a>>,
    /// 1-based line number of the paragraph's first field.
    pub line: usize,
}

impl<'a> Paragraph<'a> {
    /// The first field called `name` (field names are case-insensitive in deb822).
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The single-line value of `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.field(name).map(|f| f.value)
    }

    /// The whitespace-separated words of `name` across all its lines (multi-value fields such
    /// as `Suites: bookworm bookworm-updates` or values folded over several lines).
    pub fn words(&self, name: &str) -> Vec<&'a str> {
        match self.field(name) {
            Some(f) => f
                .value
                .split_ascii_whitespace()
                .chain(
                    // A comment line amid continuation lines lies inside `rest`; it is no value.
                    f.rest
                        .lines()
                        .filter(|l| l.starts_with([' ', '\t']))
                        .flat_map(str::split_ascii_whitespace),
                )
                .collect(),
            None => Vec::new(),
        }
    }
}

/// A line that is neither a field, a continuation, a comment nor a separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: &'static str,
}

/// Parses `text` into paragraphs. With `comments`, lines starting with `#` are skipped (as apt
/// does for `*.sources`); without, they are bad lines (as in the dpkg status file).
pub fn parse(text: &str, comments: bool) -> (Vec<Paragraph<'_>>, Vec<BadLine>) {
    let mut paragraphs = Vec::new();
    let mut bad = Vec::new();
    let mut current = Paragraph::default();
    // Byte range of the continuation lines of the last field, extended as they come.
    let mut rest: Option<(usize, usize)> = None;
    let mut offset = 0;

    /// Attaches the pending continuation lines to the paragraph's last field.
    fn close_field<'a>(
        text: &'a str,
        current: &mut Paragraph<'a>,
        rest: &mut Option<(usize, usize)>,
    ) {
        if let (Some((s, e)), Some(f)) = (rest.take(), current.fields.last_mut()) {
            f.rest = text.get(s..e).unwrap_or("");
        }
    }

    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += raw.len();
        let line_no = i + 1;
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            close_field(text, &mut current, &mut rest);
            if !current.fields.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if comments && line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if current.fields.is_empty() {
                bad.push(BadLine {
                    line: line_no,
                    reason: "continuation line without a field",
                });
            } else {
                let end = start + line.len();
                rest = Some(match rest {
                    Some((s, _)) => (s, end),
                    None => (start, end),
                });
            }
            continue;
        }
        close_field(text, &mut current, &mut rest);
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains([' ', '\t']) => {
                if current.fields.is_empty() {
                    current.line = line_no;
                }
                current.fields.push(Field {
                    name,
                    value: value.trim(),
                    rest: "",
                    line: line_no,
                });
            }
            _ => bad.push(BadLine {
                line: line_no,
                reason: "not a `Field: value` line",
            }),
        }
    }
    close_field(text, &mut current, &mut rest);
    if !current.fields.is_empty() {
        paragraphs.push(current);
    }
    (paragraphs, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_fields_and_continuations() {
        let text = "Package: a\nVersion: 1\nDescription: short\n long line\n .\n more\n\n\n\
                    package: b\r\nstatus: install ok installed\r\n";
        let (ps, bad) = parse(text, false);
        assert!(bad.is_empty());
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("a"));
        let d = ps[0].field("Description").unwrap();
        assert_eq!(d.value, "short");
        assert_eq!(d.rest, " long line\n .\n more");
        assert_eq!(ps[1].line, 9);
        assert_eq!(ps[1].get("Status"), Some("install ok installed"));
        assert_eq!(ps[1].field("Status").unwrap().line, 10);
    }

    #[test]
    fn words_span_folded_lines() {
        let (ps, _) = parse("Suites: a b\n  c\n# d\n e\nURIs:\n http://x/\n", true);
        assert_eq!(ps[0].words("Suites"), ["a", "b", "c", "e"]);
        assert_eq!(ps[0].words("uris"), ["http://x/"]);
        assert!(ps[0].words("Components").is_empty());
    }

    #[test]
    fn comments_only_where_allowed() {
        let text = "# header\nTypes: deb\n# inside\nURIs: http://x/\n";
        let (ps, bad) = parse(text, true);
        assert!(bad.is_empty());
        assert_eq!(ps[0].fields.len(), 2);
        let (_, bad) = parse(text, false);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].line, 1);
    }

    #[test]
    fn garbage_is_reported_by_line_and_skipped() {
        let text = " orphan continuation\nno colon here\nA: 1\n: empty name\nB: 2\n\tcont\n";
        let (ps, bad) = parse(text, false);
        assert_eq!(
            bad.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].get("B"), Some("2"));
        assert_eq!(ps[0].field("B").unwrap().rest, "\tcont");
    }

    #[test]
    fn whitespace_only_lines_separate_and_empty_input_is_empty() {
        let (ps, _) = parse("A: 1\n \t \nB: 2", false);
        assert_eq!(ps.len(), 2);
        assert!(parse("", false).0.is_empty());
        assert!(parse("\n\n\n", true).0.is_empty());
    }
}
