//! Message templates: text with `{name}` placeholders filled from a finding's evidence, and
//! `{{` / `}}` for literal braces. Validated when a pack is checked (every placeholder must be
//! one the rule kind provides), so rendering a finding's message never fails.

use std::borrow::Cow;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'t> {
    Text(Cow<'t, str>),
    /// A placeholder, with the byte offset of its `{` in the template.
    Field(&'t str, usize),
}

/// A syntax error in a template, at a byte offset of the template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    /// The template text the error is about, used to find it in the TOML source.
    pub fragment: String,
    pub message: String,
}

/// Split a template into text and placeholders, or report every syntax error in it.
pub(crate) fn parse(template: &str) -> Result<Vec<Piece<'_>>, Vec<TemplateError>> {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut text = String::new();
    let mut rest = template.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        match c {
            '{' if rest.peek().map(|&(_, c)| c) == Some('{') => {
                rest.next();
                text.push('{');
            }
            '}' if rest.peek().map(|&(_, c)| c) == Some('}') => {
                rest.next();
                text.push('}');
            }
            '{' => {
                let after = &template[i + 1..];
                match after.find('}') {
                    Some(end) => {
                        let name = &after[..end];
                        let fragment = &template[i..i + end + 2];
                        // Skip past the name and its closing brace.
                        for _ in 0..name.chars().count() + 1 {
                            rest.next();
                        }
                        if is_name(name) {
                            if !text.is_empty() {
                                pieces.push(Piece::Text(Cow::Owned(std::mem::take(&mut text))));
                            }
                            pieces.push(Piece::Field(name, i));
                        } else {
                            errors.push(TemplateError {
                                offset: i,
                                fragment: fragment.to_string(),
                                message: format!(
                                    "`{fragment}` is not a placeholder: names are lower-case \
                                     letters, digits and `_` (write `{{{{` for a literal brace)"
                                ),
                            });
                        }
                    }
                    None => {
                        errors.push(TemplateError {
                            offset: i,
                            fragment: template[i..].chars().take(12).collect(),
                            message: "`{` opens a placeholder that is never closed with `}` \
                                      (write `{{` for a literal brace)"
                                .to_string(),
                        });
                        break;
                    }
                }
            }
            '}' => errors.push(TemplateError {
                offset: i,
                fragment: template[i..].chars().take(12).collect(),
                message: "`}` without a matching `{` (write `}}` for a literal brace)".to_string(),
            }),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(Cow::Owned(text)));
    }
    if errors.is_empty() {
        Ok(pieces)
    } else {
        Err(errors)
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Fill a template. A placeholder `lookup` does not know renders as nothing; validation
/// makes sure that does not happen with a checked pack, and a bad template renders as itself.
pub(crate) fn render<'v>(template: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    let Ok(pieces) = parse(template) else {
        return template.to_string();
    };
    let mut out = String::with_capacity(template.len() + 32);
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Field(name, _) => out.push_str(lookup(name).unwrap_or("")),
        }
    }
    out
}

/// Where a template offset lies in the TOML source of its string value (`raw` is the source
/// text of the value, quotes included), so errors point at the placeholder itself. Strings
/// with escapes can't be mapped by arithmetic; there the fragment is looked for in the raw
/// text, and failing that the error points at the value's start.
pub(crate) fn locate_in_source(raw: &str, offset: usize, fragment: &str) -> usize {
    let (quote, basic) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else {
        return 0;
    };
    if basic && raw.contains('\\') {
        return raw.find(fragment).unwrap_or(0);
    }
    let body = &raw[quote..];
    // TOML drops a newline right after the opening delimiter of a multi-line string.
    let skip = if quote == 3 {
        if body.starts_with("\r\n") {
            2
        } else if body.starts_with('\n') {
            1
        } else {
            0
        }
    } else {
        0
    };
    let at = quote + skip + offset;
    if raw.is_char_boundary(at) { at } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &str) -> Vec<String> {
        parse(t)
            .unwrap()
            .into_iter()
            .filter_map(|p| match p {
                Piece::Field(n, _) => Some(n.to_string()),
                Piece::Text(_) => None,
            })
            .collect()
    }

    #[test]
    fn placeholders_and_literal_braces() {
        assert_eq!(names("Till {target} från {user}"), ["target", "user"]);
        assert_eq!(names("{{inte}} en {plats_2}"), ["plats_2"]);
        let out = render("{{{a}}} och {b}!", |n| match n {
            "a" => Some("x"),
            "b" => Some("å"),
            _ => None,
        });
        assert_eq!(out, "{x} och å!");
    }

    #[test]
    fn syntax_errors_name_their_offset() {
        let errs = parse("ok {Bad} and {open").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].offset, 3);
        assert!(errs[0].message.contains("`{Bad}`"), "{}", errs[0].message);
        assert_eq!(errs[1].offset, 13);
        let errs = parse("a } b").unwrap_err();
        assert_eq!(errs[0].offset, 2);
        // Multi-byte text before a placeholder keeps offsets in bytes of the template.
        assert_eq!(parse("åäö {x").unwrap_err()[0].offset, 7);
    }

    #[test]
    fn unknown_placeholders_render_empty_and_bad_templates_verbatim() {
        assert_eq!(render("a{x}b", |_| None), "ab");
        assert_eq!(render("a{b", |_| Some("!")), "a{b");
    }

    #[test]
    fn locating_offsets_in_the_source() {
        // "x {y}" at offset 2 of the value; the raw value starts with its quote.
        assert_eq!(locate_in_source("\"x {y}\"", 2, "{y}"), 3);
        assert_eq!(locate_in_source("'x {y}'", 2, "{y}"), 3);
        assert_eq!(locate_in_source("\"\"\"\nx {y}\"\"\"", 2, "{y}"), 6);
        // With an escape before it, the fragment is searched for.
        assert_eq!(locate_in_source("\"\\\"q\\\" {y}\"", 4, "{y}"), 7);
        assert_eq!(locate_in_source("\"\\u00e5 {z}\"", 3, "{nope}"), 0);
    }
}
