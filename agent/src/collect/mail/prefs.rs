//! Reader for Mozilla preference files (`prefs.js`, `user.js`), following the grammar of
//! libpref's own parser (modules/libpref/parser):
//!
//! ```text
//! pref-file  = *pref
//! pref       = spec "(" string "," value *("," attr) ")" ";"
//! spec       = "user_pref" / "pref" / "sticky_pref" / "lockPref"
//! value      = string / "true" / "false" / ["+" / "-"] int      ; int fits an i32
//! string     = '...' or "..." with \" \' \\ \n \r \xNN \uNNNN (surrogate pairs joined)
//! comments   = # ... / // ... / /* ... */        end of line = \n, \r\n or a lone \r
//! ```
//!
//! Like libpref, a syntax error skips to the next `;` and parsing goes on, so one mangled line
//! costs one preference; every error is reported with its line. A NUL byte ends the file there
//! (libpref's end-of-file marker), which is reported too because it means a damaged file.

use super::text::{Parsed, Problem};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefValue {
    Str(String),
    Int(i32),
    Bool(bool),
}

/// The preferences of one file; a name set twice keeps its last value, as libpref does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prefs {
    values: BTreeMap<String, PrefValue>,
}

impl Prefs {
    pub fn get(&self, name: &str) -> Option<&PrefValue> {
        self.values.get(name)
    }

    /// A string preference (an int or bool under that name is not a string: `None`).
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.values.get(name)? {
            PrefValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i32> {
        match self.values.get(name)? {
            PrefValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name)? {
            PrefValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Sets every preference of `other` over these, as `user.js` overrides `prefs.js`.
    pub fn overlay(&mut self, other: Prefs) {
        self.values.extend(other.values);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// One of `( ) , ; + -`.
    Punct(u8),
    Word(Vec<u8>),
    Str(Vec<u8>),
    Int(u64),
    Eof,
    /// A token that could not be read; the message says why.
    Bad(&'static str),
}

struct Lexer<'a> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
    /// Where a NUL byte cut the file short, if it did.
    nul_at: Option<usize>,
}

impl<'a> Lexer<'a> {
    fn new(buf: &'a [u8]) -> Self {
        // libpref treats NUL as the end of the file.
        let (buf, nul_at) = match buf.iter().position(|&b| b == 0) {
            Some(n) => (&buf[..n], Some(n)),
            None => (buf, None),
        };
        Self {
            buf,
            pos: 0,
            line: 1,
            nul_at,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Consumes one end of line (`\n`, `\r\n` or `\r`) if one is next.
    fn eat_eol(&mut self) -> bool {
        match self.peek() {
            Some(b'\n') => {
                self.pos += 1;
                self.line += 1;
                true
            }
            Some(b'\r') => {
                self.pos += 1;
                if self.peek() == Some(b'\n') {
                    self.pos += 1;
                }
                self.line += 1;
                true
            }
            _ => false,
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\n' || c == b'\r' {
                self.eat_eol();
                return;
            }
            self.pos += 1;
        }
    }

    fn next(&mut self) -> (Tok, usize) {
        loop {
            let line = self.line;
            let Some(c) = self.peek() else {
                return (Tok::Eof, line);
            };
            match c {
                b'\n' | b'\r' => {
                    self.eat_eol();
                }
                b' ' | b'\t' | 0x0b | 0x0c => self.pos += 1,
                b'#' => self.skip_line(),
                b'/' => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'/') => self.skip_line(),
                        Some(b'*') => {
                            self.pos += 1;
                            if !self.skip_block_comment() {
                                return (Tok::Bad("unterminated /* comment"), line);
                            }
                        }
                        _ => return (Tok::Bad("expected '/' or '*' after '/'"), line),
                    }
                }
                b'(' | b')' | b',' | b';' | b'+' | b'-' => {
                    self.pos += 1;
                    return (Tok::Punct(c), line);
                }
                b'"' | b'\'' => {
                    self.pos += 1;
                    return (self.string(c), line);
                }
                b'0'..=b'9' => return (self.int(), line),
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let start = self.pos;
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                    {
                        self.pos += 1;
                    }
                    return (Tok::Word(self.buf[start..self.pos].to_vec()), line);
                }
                _ => {
                    self.pos += 1;
                    return (Tok::Bad("unexpected character"), line);
                }
            }
        }
    }

    fn skip_block_comment(&mut self) -> bool {
        loop {
            match self.peek() {
                None => return false,
                Some(b'*') if self.buf.get(self.pos + 1) == Some(&b'/') => {
                    self.pos += 2;
                    return true;
                }
                Some(b'\n' | b'\r') => {
                    self.eat_eol();
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn int(&mut self) -> Tok {
        let mut value: Option<u64> = Some(0);
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.pos += 1;
                value = value
                    .and_then(|v| v.checked_mul(10))
                    .and_then(|v| v.checked_add(u64::from(c - b'0')));
            } else if c.is_ascii_alphabetic() || c == b'_' {
                // "123abc" is no number; the word after it is read as the next token.
                return Tok::Bad("unexpected character in integer literal");
            } else {
                break;
            }
        }
        match value {
            Some(v) => Tok::Int(v),
            None => Tok::Bad("integer literal overflowed"),
        }
    }

    fn hex(&mut self, digits: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..digits {
            let d = char::from(self.peek()?).to_digit(16)?;
            self.pos += 1;
            v = v * 16 + d;
        }
        Some(v)
    }

    /// Reads a string after its opening quote. On a bad escape it keeps reading to the closing
    /// quote, so recovery resumes after the string rather than inside it.
    fn string(&mut self, quote: u8) -> Tok {
        let mut out = Vec::new();
        let mut bad: Option<&'static str> = None;
        loop {
            let Some(c) = self.peek() else {
                return Tok::Bad("unterminated string literal");
            };
            if c == quote {
                self.pos += 1;
                break;
            }
            if c == b'\n' || c == b'\r' {
                // Strings may span lines; keep the text, count the line.
                let start = self.pos;
                self.eat_eol();
                out.extend_from_slice(&self.buf[start..self.pos]);
                continue;
            }
            self.pos += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            match self.bump() {
                Some(b'"') => out.push(b'"'),
                Some(b'\'') => out.push(b'\''),
                Some(b'\\') => out.push(b'\\'),
                Some(b'n') => out.push(b'\n'),
                Some(b'r') => out.push(b'\r'),
                Some(b'x') => match self.hex(2) {
                    Some(0) => bad = bad.or(Some("\\x00 is not allowed")),
                    // A raw byte, as libpref copies it; invalid UTF-8 shows up lossily later.
                    Some(v) => out.push(v as u8),
                    None => bad = bad.or(Some("malformed \\x escape sequence")),
                },
                Some(b'u') => match self.unicode_escape() {
                    Ok(ch) => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    Err(msg) => bad = bad.or(Some(msg)),
                },
                Some(b'\n' | b'\r') => {
                    self.pos -= 1;
                    bad = bad.or(Some("unexpected escape sequence character after '\\'"));
                }
                Some(_) => bad = bad.or(Some("unexpected escape sequence character after '\\'")),
                None => return Tok::Bad("unterminated string literal"),
            }
        }
        match bad {
            Some(msg) => Tok::Bad(msg),
            None => Tok::Str(out),
        }
    }

    /// `\uNNNN`, joining a high surrogate with the `\uNNNN` low surrogate that must follow it.
    fn unicode_escape(&mut self) -> Result<char, &'static str> {
        let hi = self.hex(4).ok_or("malformed \\u escape sequence")?;
        match hi {
            0 => Err("\\u0000 is not allowed"),
            0xd800..=0xdbff => {
                if self.buf.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err("expected low surrogate after high surrogate");
                }
                self.pos += 2;
                let lo = self.hex(4).ok_or("malformed \\u escape sequence")?;
                if !(0xdc00..=0xdfff).contains(&lo) {
                    return Err("invalid low surrogate after high surrogate");
                }
                let code = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                char::from_u32(code).ok_or("invalid surrogate pair")
            }
            0xdc00..=0xdfff => Err("expected high surrogate before low surrogate"),
            v => char::from_u32(v).ok_or("invalid \\u escape sequence"),
        }
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    line: usize,
    problems: Vec<Problem>,
}

impl Parser<'_> {
    fn advance(&mut self) {
        let (tok, line) = self.lex.next();
        self.tok = tok;
        self.line = line;
    }

    /// Records an error and skips to just after the next `;` (or to the end).
    fn recover(&mut self, expected: &str) {
        let message = match &self.tok {
            Tok::Bad(msg) => (*msg).to_string(),
            Tok::Eof => format!("{expected} (file ends here: truncated?)"),
            _ => expected.to_string(),
        };
        self.problems.push(Problem::new(self.line, message));
        loop {
            match self.tok {
                Tok::Eof => return,
                Tok::Punct(b';') => {
                    self.advance();
                    return;
                }
                _ => self.advance(),
            }
        }
    }

    fn expect_punct(&mut self, p: u8, expected: &str) -> bool {
        if self.tok == Tok::Punct(p) {
            self.advance();
            true
        } else {
            self.recover(expected);
            false
        }
    }

    /// One `spec(name, value[, attrs]);`; `None` after an error (already recovered).
    fn pref(&mut self) -> Option<(String, PrefValue)> {
        match &self.tok {
            Tok::Word(w)
                if matches!(
                    w.as_slice(),
                    b"user_pref" | b"pref" | b"sticky_pref" | b"lockPref"
                ) =>
            {
                self.advance()
            }
            _ => {
                self.recover("expected pref specifier at start of pref definition");
                return None;
            }
        }
        if !self.expect_punct(b'(', "expected '(' after pref specifier") {
            return None;
        }
        let name = match &self.tok {
            Tok::Str(s) => String::from_utf8_lossy(s).into_owned(),
            _ => {
                self.recover("expected pref name after '('");
                return None;
            }
        };
        self.advance();
        if !self.expect_punct(b',', "expected ',' after pref name") {
            return None;
        }
        let value = self.value()?;
        // Default-pref files may add ", sticky" / ", locked"; they say nothing we report.
        while self.tok == Tok::Punct(b',') {
            self.advance();
            match &self.tok {
                Tok::Word(w) if w == b"sticky" || w == b"locked" => self.advance(),
                _ => {
                    self.recover("expected pref attribute after ','");
                    return None;
                }
            }
        }
        if !self.expect_punct(b')', "expected ')' after pref value") {
            return None;
        }
        if self.tok != Tok::Punct(b';') {
            self.recover("expected ';' after ')'");
            return None;
        }
        self.advance();
        Some((name, value))
    }

    fn value(&mut self) -> Option<PrefValue> {
        let v = match &self.tok {
            Tok::Word(w) if w == b"true" => PrefValue::Bool(true),
            Tok::Word(w) if w == b"false" => PrefValue::Bool(false),
            Tok::Str(s) => PrefValue::Str(String::from_utf8_lossy(s).into_owned()),
            Tok::Int(_) | Tok::Punct(b'-' | b'+') => return self.int_value(),
            _ => {
                self.recover("expected pref value after ','");
                return None;
            }
        };
        self.advance();
        Some(v)
    }

    fn int_value(&mut self) -> Option<PrefValue> {
        let negative = self.tok == Tok::Punct(b'-');
        if matches!(self.tok, Tok::Punct(_)) {
            self.advance();
        }
        let Tok::Int(u) = self.tok else {
            self.recover("expected integer literal after sign");
            return None;
        };
        let v = if negative {
            i64::try_from(u).ok().map(|v| -v)
        } else {
            i64::try_from(u).ok()
        };
        match v.and_then(|v| i32::try_from(v).ok()) {
            Some(v) => {
                self.advance();
                Some(PrefValue::Int(v))
            }
            None => {
                self.recover("integer literal overflowed");
                None
            }
        }
    }
}

/// Reads a preference file. Every preference that parses is kept, whatever else is broken.
pub fn parse_prefs(bytes: &[u8]) -> Parsed<Prefs> {
    let mut p = Parser {
        lex: Lexer::new(bytes),
        tok: Tok::Eof,
        line: 1,
        problems: Vec::new(),
    };
    p.advance();
    let mut prefs = Prefs::default();
    while p.tok != Tok::Eof {
        if let Some((name, value)) = p.pref() {
            prefs.values.insert(name, value);
        }
    }
    if let Some(at) = p.lex.nul_at {
        p.problems.push(Problem::new(
            p.lex.line,
            format!("NUL byte at offset {at}: the rest of the file is ignored (damaged file?)"),
        ));
    }
    Parsed {
        value: prefs,
        problems: p.problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_value_kind_and_escape() {
        let text = "// Mozilla User Preferences\r\n\
            /* multi\r\n line */\r\n\
            # hash comment\r\n\
            user_pref(\"mail.identity.id1.fullName\", \"\\u00C5sa \\u00d6berg\");\r\n\
            user_pref(\"a.raw\", \"Åsa Öberg\");\r\n\
            user_pref('b', 'it\\'s \\\"q\\\" \\\\ \\n end');\r\n\
            user_pref(\"c\", -2147483648);\n\
            user_pref(\"d\", +7);\r\
            user_pref(\"e\", true);\n\
            user_pref(\"f\", false);\n\
            user_pref(\"g\", \"\\uD83D\\uDE00 \\x41\");\n\
            pref(\"h\", 1, sticky);\n";
        let got = parse_prefs(text.as_bytes());
        assert_eq!(got.problems, vec![]);
        let p = &got.value;
        assert_eq!(p.str("mail.identity.id1.fullName"), Some("Åsa Öberg"));
        assert_eq!(p.str("a.raw"), Some("Åsa Öberg"));
        assert_eq!(p.str("b"), Some("it's \"q\" \\ \n end"));
        assert_eq!(p.int("c"), Some(i32::MIN));
        assert_eq!(p.int("d"), Some(7));
        assert_eq!(p.bool("e"), Some(true));
        assert_eq!(p.bool("f"), Some(false));
        assert_eq!(p.str("g"), Some("😀 A"));
        assert_eq!(p.int("h"), Some(1));
        assert_eq!(p.len(), 9);
    }

    #[test]
    fn recovers_after_errors_and_names_lines() {
        let text = "user_pref(\"ok1\", 1);\n\
            user_pref(\"bad\" 2);\n\
            garbage garbage;\n\
            user_pref(\"big\", 2147483648);\n\
            user_pref(\"esc\", \"\\q\");\n\
            user_pref(\"ok2\", \"two\");\n\
            user_pref(\"cut\", \"no end";
        let got = parse_prefs(text.as_bytes());
        assert_eq!(got.value.int("ok1"), Some(1));
        assert_eq!(got.value.str("ok2"), Some("two"));
        assert_eq!(got.value.len(), 2);
        let lines: Vec<usize> = got.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 7]);
        assert_eq!(got.problems[4].message, "unterminated string literal");
    }

    #[test]
    fn later_values_win_and_nul_ends_the_file() {
        let got =
            parse_prefs(b"user_pref(\"a\", 1);\nuser_pref(\"a\", 2);\n\0user_pref(\"b\", 3);");
        assert_eq!(got.value.int("a"), Some(2));
        assert_eq!(got.value.get("b"), None);
        assert_eq!(got.problems.len(), 1);
        assert!(got.problems[0].message.contains("NUL byte"));
    }

    #[test]
    fn garbage_never_panics() {
        for input in [
            &b"\xff\xfe\x00"[..],
            b"user_pref(",
            b"user_pref(\"a\", \"\\uD800\");",
            b"user_pref(\"a\", \"\\uDC00\");",
            b"user_pref(\"a\", \"\\u12\");",
            b"/* open",
            b"user_pref(\"a\", 99999999999999999999999);",
            b"\\\\\\\"\"'",
        ] {
            let got = parse_prefs(input);
            assert!(got.value.is_empty(), "{input:?}");
        }
    }
}
