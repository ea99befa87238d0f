//! The `[Section]` / `key=value` files both mail clients keep: Mozilla's `profiles.ini` and
//! `installs.ini` (nsINIParser: `;` and `#` comments) and Evolution's GKeyFile `.source` files
//! (`#` comments, `Key[locale]=` translations). One reader; each caller says which comment
//! characters count and decides what a line it did not understand means for its file.

use super::text::{Parsed, Problem};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub name: String,
    pub line: usize,
    /// Keys and raw values in file order (values trimmed, not unescaped).
    pub entries: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ini {
    pub sections: Vec<Section>,
}

impl Ini {
    /// The value of `key` in the first section called `section`; a repeated key's last value,
    /// as both nsINIParser and GKeyFile keep it.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section)?.get(key)
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an INI text. Lines that are neither a comment, a section header nor `key=value` (and
/// entries before the first section) are reported as problems and skipped.
pub fn parse_ini(text: &str, comment_chars: &[char]) -> Parsed<Ini> {
    let mut out = Parsed::<Ini>::default();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() || line.starts_with(comment_chars) {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(name) => out.value.sections.push(Section {
                    name: name.to_string(),
                    line: line_no,
                    entries: Vec::new(),
                }),
                None => out
                    .problems
                    .push(Problem::new(line_no, "section header without ']'")),
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            out.problems.push(Problem::new(
                line_no,
                "not a key=value line, a section or a comment",
            ));
            continue;
        };
        match out.value.sections.last_mut() {
            Some(section) => section
                .entries
                .push((key.trim().to_string(), value.trim().to_string())),
            None => out
                .problems
                .push(Problem::new(line_no, "entry before the first [section]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_and_reports_garbage() {
        let text = "; moz\r\nstray=1\r\n[General]\r\nStartWithLastProfile=1\r\n\r\n\
                    [Profile0]\r\nName=Åsa\r\nPath = abcd.default \r\nPath=later\r\n\
                    garbage here\r\n[broken\r\n";
        let got = parse_ini(text, &[';', '#']);
        assert_eq!(got.value.get("Profile0", "Name"), Some("Åsa"));
        assert_eq!(got.value.get("Profile0", "Path"), Some("later"));
        assert_eq!(got.value.get("General", "StartWithLastProfile"), Some("1"));
        let lines: Vec<usize> = got.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 10, 11]);
    }
}
