//! Reading a TOML document through toml's own spanned tree (`toml::de::DeTable`), so the pack
//! validator reports *every* error at once, each at the exact key or value it is about. Serde's
//! derive (even with `deny_unknown_fields`) stops at the first error, which would make an IT
//! admin fix a pack one line per round trip; walking the spanned tree keeps toml's parser and
//! positions while collecting all problems.

use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem found in the document, at a byte range of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diag {
    pub span: Range<usize>,
    pub message: String,
}

/// Every problem found so far.
#[derive(Debug, Default)]
pub(crate) struct Diags(pub Vec<Diag>);

impl Diags {
    pub fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.0.push(Diag {
            span,
            message: message.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// TOML's name for the type of a value, for "expected X, found Y" messages.
pub(crate) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A table being read: hands out the values asked for and, at `finish`, reports every key
/// nobody asked for as unknown (the spanned equivalent of serde's `deny_unknown_fields`).
pub(crate) struct Fields<'a, 'i> {
    table: &'a DeTable<'i>,
    /// The table's header (`[[rule]]`), or the start of the document for the root table;
    /// missing keys are reported there, as that is where they belong.
    span: Range<usize>,
    /// How messages name this table, e.g. "rule `mail-forward`".
    what: String,
    taken: BTreeSet<&'a str>,
}

impl<'a, 'i> Fields<'a, 'i> {
    pub fn new(table: &'a DeTable<'i>, span: Range<usize>, what: impl Into<String>) -> Self {
        Self {
            table,
            span,
            what: what.into(),
            taken: BTreeSet::new(),
        }
    }

    /// Rename the table in later messages (a rule is "this rule" until its id is known).
    pub fn set_what(&mut self, what: impl Into<String>) {
        self.what = what.into();
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    fn lookup(
        &mut self,
        key: &'static str,
        required: bool,
        d: &mut Diags,
    ) -> Option<&'a Spanned<DeValue<'i>>> {
        self.taken.insert(key);
        let value = self.table.get(key);
        if value.is_none() && required {
            d.push(
                self.span.clone(),
                format!("{} is missing the required key `{key}`", self.what),
            );
        }
        value
    }

    /// A scalar value that `get` can read; anything else is reported as not being `expected`.
    fn scalar<T>(
        &mut self,
        key: &'static str,
        required: bool,
        d: &mut Diags,
        expected: &str,
        get: impl Fn(&DeValue<'i>) -> Option<T>,
    ) -> Option<Spanned<T>> {
        let value = self.lookup(key, required, d)?;
        let got = get(value.get_ref());
        if got.is_none() {
            d.push(
                value.span(),
                format!(
                    "`{key}` must be {expected}, not {}",
                    type_name(value.get_ref())
                ),
            );
        }
        got.map(|v| Spanned::new(value.span(), v))
    }

    /// A string value.
    pub fn string(
        &mut self,
        key: &'static str,
        required: bool,
        d: &mut Diags,
    ) -> Option<Spanned<String>> {
        self.scalar(key, required, d, "a string", |v| match v {
            DeValue::String(s) => Some(s.to_string()),
            _ => None,
        })
    }

    /// An array of strings; each element keeps its own span.
    pub fn strings(
        &mut self,
        key: &'static str,
        required: bool,
        d: &mut Diags,
    ) -> Option<Spanned<Vec<Spanned<String>>>> {
        let value = self.lookup(key, required, d)?;
        let DeValue::Array(items) = value.get_ref() else {
            d.push(
                value.span(),
                format!(
                    "`{key}` must be an array of strings, not {}",
                    type_name(value.get_ref())
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                other => {
                    ok = false;
                    d.push(
                        item.span(),
                        format!(
                            "`{key}` must contain only strings, not {}",
                            type_name(other)
                        ),
                    );
                }
            }
        }
        ok.then(|| Spanned::new(value.span(), out))
    }

    /// An array of strings that must not be empty; `what` says what it must name.
    pub fn strings_non_empty(
        &mut self,
        key: &'static str,
        required: bool,
        d: &mut Diags,
        what: &str,
    ) -> Option<Spanned<Vec<Spanned<String>>>> {
        let list = self.strings(key, required, d)?;
        if list.get_ref().is_empty() {
            d.push(
                list.span(),
                format!("`{key}` must name at least one {what}"),
            );
            return None;
        }
        Some(list)
    }

    /// A whole number from `min` up that fits a `u32` (a count of days).
    pub fn count(
        &mut self,
        key: &'static str,
        required: bool,
        d: &mut Diags,
        min: u32,
    ) -> Option<Spanned<u32>> {
        let n = self.scalar(key, required, d, "an integer", |v| match v {
            // Out-of-range integers are kept as None inside and reported below.
            DeValue::Integer(i) => Some(i64::from_str_radix(i.as_str(), i.radix()).ok()),
            _ => None,
        })?;
        let span = n.span();
        match n.into_inner().and_then(|v| u32::try_from(v).ok()) {
            Some(v) if v >= min => Some(Spanned::new(span, v)),
            _ => {
                let raw = self
                    .table
                    .get(key)
                    .and_then(|v| match v.get_ref() {
                        DeValue::Integer(i) => Some(i.to_string()),
                        _ => None,
                    })
                    .unwrap_or_default();
                d.push(
                    span,
                    format!("`{key}` must be a whole number from {min}, not {raw}"),
                );
                None
            }
        }
    }

    /// A boolean value.
    pub fn boolean(
        &mut self,
        key: &'static str,
        required: bool,
        d: &mut Diags,
    ) -> Option<Spanned<bool>> {
        self.scalar(key, required, d, "true or false", |v| match v {
            DeValue::Boolean(b) => Some(*b),
            _ => None,
        })
    }

    /// A sub-table (`[rule.params]` or an inline `params = { ... }`).
    pub fn table(
        &mut self,
        key: &'static str,
        d: &mut Diags,
    ) -> Option<(&'a DeTable<'i>, Range<usize>)> {
        let value = self.lookup(key, false, d)?;
        match value.get_ref() {
            DeValue::Table(t) => Some((t, value.span())),
            other => {
                d.push(
                    value.span(),
                    format!("`{key}` must be a table, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An array of tables (`[[rule]]`); each element with its header span.
    pub fn tables(
        &mut self,
        key: &'static str,
        d: &mut Diags,
    ) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
        let Some(value) = self.lookup(key, false, d) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            d.push(
                value.span(),
                format!(
                    "`{key}` must be an array of tables (`[[{key}]]`), not {}",
                    type_name(value.get_ref())
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push((t, item.span())),
                other => d.push(
                    item.span(),
                    format!("each `{key}` must be a table, not {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// Report every key of the table that was not asked for. `expected` lists the keys this
    /// table may have, so the message can say what was probably meant.
    pub fn finish(self, d: &mut Diags, expected: &[&str]) {
        for (key, _) in self.table.iter() {
            if !self.taken.contains(key.get_ref().as_ref()) {
                let hint = if expected.is_empty() {
                    format!("{} takes no keys here", self.what)
                } else {
                    format!("expected one of: {}", expected.join(", "))
                };
                d.push(
                    key.span(),
                    format!("unknown key `{}` in {} ({hint})", key.get_ref(), self.what),
                );
            }
        }
    }
}

/// 1-based line and column (in characters, as editors count them) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let text = "a = 1\nnamn = \"Åsa\" x\n";
        let x = text.find('x').unwrap();
        assert_eq!(line_col(text, x), (2, 14));
        assert_eq!(line_col(text, 0), (1, 1));
        // Past the end and mid-character offsets clamp instead of panicking.
        assert_eq!(line_col(text, 10_000), (3, 1));
        let a_ring = text.find('Å').unwrap();
        assert_eq!(line_col(text, a_ring + 1), (2, 9));
    }
}
