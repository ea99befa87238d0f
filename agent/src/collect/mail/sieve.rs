//! The user's active Sieve script (Dovecot Pigeonhole: `~/.dovecot.sieve`, usually a symlink
//! into `~/sieve/`) and the `redirect` actions in it.
//!
//! The reader is a lexer and parser for the RFC 5228 grammar:
//!
//! ```text
//! commands  = *command
//! command   = identifier arguments (";" / block)
//! block     = "{" commands "}"
//! arguments = *argument [test / test-list]
//! argument  = string-list / number / tag
//! test      = identifier arguments
//! test-list = "(" test *("," test) ")"
//! string-list = "[" string *("," string) "]" / string
//! ```
//!
//! with `#` and `/* */` comments, quoted strings (`\"` and `\\`; any other `\x` is `x`),
//! multi-line strings (`text:` ... a line holding only `.`, with dot-stuffing), numbers with
//! `K`/`M`/`G`, and tags. Every `redirect` inside any `if`/`elsif`/`else` (or other block) is
//! reported; `redirect :copy` (RFC 3894), or a `keep` or `fileinto` beside it, keeps a copy.
//! `include :personal "name"` is followed into `~/sieve/name.sieve` (the Pigeonhole default
//! storage); `:global` includes live outside the user's files and are not followed.
//!
//! A script that does not parse is not run by Pigeonhole at all (delivery falls back to keep),
//! so a syntax error is reported for the file and no redirect from it.

use super::Probe;
use super::text::{Parsed, Problem, bare_address, decode, truncate_chars};
use crate::collect::userfile;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use vakt_proto::model::ForwardKind;

pub const CLIENT: &str = "sieve";

/// Nesting deeper than this is refused; real scripts nest a few levels.
const MAX_DEPTH: usize = 64;
/// Includes followed from the active script, at most this deep.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Condition text kept per level in a rule's description.
const MAX_CONDITION_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Str(String),
    List(Vec<String>),
    Num(u64),
    Tag(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    pub name: String,
    pub args: Vec<Arg>,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: String,
    pub args: Vec<Arg>,
    pub tests: Vec<Test>,
    pub block: Option<Vec<Command>>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Tag(String),
    Str(String),
    Num(u64),
    Punct(u8),
    Eof,
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn err(&self, line: usize, msg: impl Into<String>) -> Problem {
        Problem::new(line, msg)
    }

    /// The next token and the line it starts on.
    fn next(&mut self) -> Result<(Tok, usize), Problem> {
        loop {
            let line = self.line;
            let Some(c) = self.peek() else {
                return Ok((Tok::Eof, line));
            };
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.bump();
                }
                b'#' => self.skip_line(),
                b'/' if self.s.get(self.pos + 1) == Some(&b'*') => {
                    self.pos += 2;
                    loop {
                        match self.bump() {
                            None => return Err(self.err(line, "unterminated /* comment")),
                            Some(b'*') if self.peek() == Some(b'/') => {
                                self.pos += 1;
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                b'"' => {
                    self.pos += 1;
                    return self.quoted(line).map(|s| (Tok::Str(s), line));
                }
                b'[' | b']' | b'(' | b')' | b'{' | b'}' | b',' | b';' => {
                    self.pos += 1;
                    return Ok((Tok::Punct(c), line));
                }
                b':' => {
                    self.pos += 1;
                    let id = self.ident();
                    if id.is_empty() {
                        return Err(self.err(line, "':' not followed by a tag name"));
                    }
                    return Ok((Tok::Tag(id.to_ascii_lowercase()), line));
                }
                b'0'..=b'9' => return self.number(line).map(|n| (Tok::Num(n), line)),
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let id = self.ident();
                    if id.eq_ignore_ascii_case("text") && self.peek() == Some(b':') {
                        self.pos += 1;
                        return self.multiline(line).map(|s| (Tok::Str(s), line));
                    }
                    return Ok((Tok::Ident(id.to_ascii_lowercase()), line));
                }
                other => {
                    return Err(self.err(
                        line,
                        format!("unexpected character {:?}", char::from(other)),
                    ));
                }
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.bump() {
            if c == b'\n' {
                break;
            }
        }
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        {
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                self.pos += 1;
            }
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn number(&mut self, line: usize) -> Result<u64, Problem> {
        let mut v: u64 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            self.pos += 1;
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .ok_or_else(|| self.err(line, "number too large"))?;
        }
        let shift = match self.peek() {
            Some(b'K' | b'k') => 10,
            Some(b'M' | b'm') => 20,
            Some(b'G' | b'g') => 30,
            _ => 0,
        };
        if shift > 0 {
            self.pos += 1;
            v = v
                .checked_mul(1 << shift)
                .ok_or_else(|| self.err(line, "number too large"))?;
        }
        Ok(v)
    }

    fn quoted(&mut self, line: usize) -> Result<String, Problem> {
        let mut out = Vec::new();
        loop {
            match self.bump() {
                None => return Err(self.err(line, "unterminated string")),
                Some(b'"') => return Ok(String::from_utf8_lossy(&out).into_owned()),
                // RFC 5228 2.4.2: `\\` and `\"` escape; any other `\x` is just `x`.
                Some(b'\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => return Err(self.err(line, "unterminated string")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// A `text:` string: rest of the line blank or a `#` comment, then lines up to one that is
    /// only `.`; a leading `..` stands for `.`.
    fn multiline(&mut self, line: usize) -> Result<String, Problem> {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'#') => self.skip_line(),
            Some(b'\r') if self.s.get(self.pos + 1) == Some(&b'\n') => {
                self.pos += 1;
                self.bump();
            }
            Some(b'\n') => {
                self.bump();
            }
            _ => return Err(self.err(line, "'text:' must be followed by a line break")),
        }
        let mut out = String::new();
        loop {
            if self.pos >= self.s.len() {
                return Err(self.err(line, "unterminated multi-line string (no '.' line)"));
            }
            let start = self.pos;
            self.skip_line();
            let raw = &self.s[start..self.pos];
            let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw == b"." {
                return Ok(out);
            }
            let raw = if raw.starts_with(b"..") {
                &raw[1..]
            } else {
                raw
            };
            out.push_str(&String::from_utf8_lossy(raw));
            out.push('\n');
        }
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    line: usize,
}

impl Parser<'_> {
    fn advance(&mut self) -> Result<(), Problem> {
        let (tok, line) = self.lex.next()?;
        self.tok = tok;
        self.line = line;
        Ok(())
    }

    fn unexpected(&self, wanted: &str) -> Problem {
        let found = match &self.tok {
            Tok::Ident(i) => format!("'{i}'"),
            Tok::Tag(t) => format!("':{t}'"),
            Tok::Str(_) => "a string".to_string(),
            Tok::Num(n) => n.to_string(),
            Tok::Punct(p) => format!("'{}'", char::from(*p)),
            Tok::Eof => "the end of the script (truncated?)".to_string(),
        };
        Problem::new(self.line, format!("expected {wanted}, found {found}"))
    }

    fn commands(&mut self, depth: usize) -> Result<Vec<Command>, Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::new(self.line, "blocks nested too deeply"));
        }
        let mut out = Vec::new();
        loop {
            match &self.tok {
                Tok::Eof if depth == 0 => return Ok(out),
                Tok::Punct(b'}') if depth > 0 => return Ok(out),
                Tok::Ident(name) => {
                    let name = name.clone();
                    let line = self.line;
                    self.advance()?;
                    let (args, tests) = self.arguments(depth)?;
                    let block = match self.tok {
                        Tok::Punct(b';') => {
                            self.advance()?;
                            None
                        }
                        Tok::Punct(b'{') => {
                            self.advance()?;
                            let inner = self.commands(depth + 1)?;
                            // `commands` returns only at '}' when nested.
                            self.advance()?;
                            Some(inner)
                        }
                        _ => return Err(self.unexpected("';' or '{'")),
                    };
                    out.push(Command {
                        name,
                        args,
                        tests,
                        block,
                        line,
                    });
                }
                _ => return Err(self.unexpected("a command")),
            }
        }
    }

    fn arguments(&mut self, depth: usize) -> Result<(Vec<Arg>, Vec<Test>), Problem> {
        let mut args = Vec::new();
        loop {
            match &self.tok {
                Tok::Str(s) => args.push(Arg::Str(s.clone())),
                Tok::Num(n) => args.push(Arg::Num(*n)),
                Tok::Tag(t) => args.push(Arg::Tag(t.clone())),
                Tok::Punct(b'[') => {
                    self.advance()?;
                    args.push(Arg::List(self.string_list()?));
                    continue;
                }
                _ => break,
            }
            self.advance()?;
        }
        let tests = match &self.tok {
            Tok::Ident(_) => vec![self.test(depth + 1)?],
            Tok::Punct(b'(') => {
                self.advance()?;
                let mut tests = vec![self.test(depth + 1)?];
                while self.tok == Tok::Punct(b',') {
                    self.advance()?;
                    tests.push(self.test(depth + 1)?);
                }
                if self.tok != Tok::Punct(b')') {
                    return Err(self.unexpected("',' or ')'"));
                }
                self.advance()?;
                tests
            }
            _ => Vec::new(),
        };
        Ok((args, tests))
    }

    /// A string list after its `[`, up to and including the `]`.
    fn string_list(&mut self) -> Result<Vec<String>, Problem> {
        let mut out = Vec::new();
        loop {
            match &self.tok {
                Tok::Str(s) => out.push(s.clone()),
                _ => return Err(self.unexpected("a string")),
            }
            self.advance()?;
            match self.tok {
                Tok::Punct(b',') => self.advance()?,
                Tok::Punct(b']') => {
                    self.advance()?;
                    return Ok(out);
                }
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }

    fn test(&mut self, depth: usize) -> Result<Test, Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::new(self.line, "tests nested too deeply"));
        }
        let Tok::Ident(name) = &self.tok else {
            return Err(self.unexpected("a test"));
        };
        let name = name.clone();
        self.advance()?;
        let (args, tests) = self.arguments(depth)?;
        Ok(Test { name, args, tests })
    }
}

/// Parses a Sieve script.
pub fn parse_sieve(text: &str) -> Result<Vec<Command>, Problem> {
    let mut p = Parser {
        lex: Lexer {
            s: text.as_bytes(),
            pos: 0,
            line: 1,
        },
        tok: Tok::Eof,
        line: 1,
    };
    p.advance()?;
    p.commands(0)
}

/// One `redirect` and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub target: String,
    /// `:copy`, or a `keep`/`fileinto` in the same block: the message also stays.
    pub keeps_copy: bool,
    /// The conditions around it, outermost first (`if header :contains "from" "x"`, `else`).
    pub conditions: Vec<String>,
    pub line: usize,
}

/// An `include` of another script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub name: String,
    pub global: bool,
    pub conditions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Script {
    pub redirects: Vec<Redirect>,
    pub includes: Vec<Include>,
}

/// Parses a script and finds its redirects and includes. A script that does not parse yields
/// nothing but the problem (Pigeonhole would not run it).
pub fn read_script(text: &str) -> Parsed<Script> {
    match parse_sieve(text) {
        Ok(commands) => {
            let mut script = Script::default();
            walk(&commands, &mut Vec::new(), &mut script);
            Parsed {
                value: script,
                problems: Vec::new(),
            }
        }
        Err(p) => Parsed {
            value: Script::default(),
            problems: vec![p],
        },
    }
}

fn strings(args: &[Arg]) -> Vec<String> {
    args.iter()
        .flat_map(|a| match a {
            Arg::Str(s) => vec![s.clone()],
            Arg::List(l) => l.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn has_tag(args: &[Arg], tag: &str) -> bool {
    args.iter().any(|a| matches!(a, Arg::Tag(t) if t == tag))
}

fn walk(commands: &[Command], conditions: &mut Vec<String>, out: &mut Script) {
    let keeps_here = commands
        .iter()
        .any(|c| c.name == "keep" || c.name == "fileinto");
    for c in commands {
        match c.name.as_str() {
            "redirect" => {
                for target in strings(&c.args) {
                    out.redirects.push(Redirect {
                        target,
                        keeps_copy: has_tag(&c.args, "copy") || keeps_here,
                        conditions: conditions.clone(),
                        line: c.line,
                    });
                }
            }
            "include" => {
                for name in strings(&c.args) {
                    out.includes.push(Include {
                        name,
                        global: has_tag(&c.args, "global"),
                        conditions: conditions.clone(),
                    });
                }
            }
            _ => {}
        }
        if let Some(block) = &c.block {
            let mut head = c.name.clone();
            for t in &c.tests {
                head.push(' ');
                head.push_str(&render_test(t));
            }
            conditions.push(truncate_chars(&head, MAX_CONDITION_CHARS));
            walk(block, conditions, out);
            conditions.pop();
        }
    }
}

fn render_arg(a: &Arg) -> String {
    match a {
        Arg::Str(s) => format!("{s:?}"),
        Arg::List(l) => format!(
            "[{}]",
            l.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Arg::Num(n) => n.to_string(),
        Arg::Tag(t) => format!(":{t}"),
    }
}

/// A test as compact source text, for the rule description.
fn render_test(t: &Test) -> String {
    let mut s = t.name.clone();
    for a in &t.args {
        s.push(' ');
        s.push_str(&render_arg(a));
    }
    match t.tests.as_slice() {
        [] => {}
        [one] if t.args.is_empty() && t.name == "not" => {
            s.push(' ');
            s.push_str(&render_test(one));
        }
        many => {
            s.push('(');
            s.push_str(&many.iter().map(render_test).collect::<Vec<_>>().join(", "));
            s.push(')');
        }
    }
    s
}

/// Reports the redirects of the user's active script (and of its personal includes).
pub fn collect(probe: &mut Probe<'_>) {
    let home = PathBuf::from(&probe.user.home);
    let active = home.join(".dovecot.sieve");
    let mut visited = BTreeSet::new();
    collect_script(probe, &active, &home.join("sieve"), &[], 0, &mut visited);
}

fn collect_script(
    probe: &mut Probe<'_>,
    path: &Path,
    storage: &Path,
    outer: &[String],
    depth: usize,
    visited: &mut BTreeSet<PathBuf>,
) {
    // The file that is really read, as the device names it: errors and rules name the script,
    // not the link to it.
    let real = match userfile::real_path(probe.root, path) {
        Ok(Some(real)) => real,
        // Missing: the read below says so (or not, for the optional active script).
        Ok(None) => path.to_path_buf(),
        Err(e) => {
            probe.error(path, e);
            return;
        }
    };
    if !visited.insert(real.clone()) {
        return;
    }
    let bytes = if depth == 0 {
        probe.read(path)
    } else {
        probe.read_expected(path, "included script is missing")
    };
    let Some(bytes) = bytes else {
        return;
    };
    let parsed = read_script(&decode(&bytes));
    probe.problems(&real, parsed.problems);
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| real.display().to_string());
    for r in &parsed.value.redirects {
        let conditions: Vec<&str> = outer
            .iter()
            .chain(&r.conditions)
            .map(String::as_str)
            .collect();
        let rule = if conditions.is_empty() {
            name.clone()
        } else {
            format!("{name}: {}", conditions.join(" / "))
        };
        probe.forward(
            CLIENT,
            rule,
            true,
            bare_address(&r.target),
            ForwardKind::Redirect,
            r.keeps_copy,
        );
    }
    for inc in &parsed.value.includes {
        if inc.global {
            continue;
        }
        if depth + 1 > MAX_INCLUDE_DEPTH {
            probe.error(
                &real,
                format!("includes nested deeper than {MAX_INCLUDE_DEPTH}"),
            );
            continue;
        }
        // A script name is a name, not a path.
        if inc.name.contains('/') || inc.name.is_empty() {
            probe.error(
                &real,
                format!("include of an invalid script name {:?}", inc.name),
            );
            continue;
        }
        let mut conditions = outer.to_vec();
        conditions.extend(inc.conditions.iter().cloned());
        conditions.push(format!("include {:?}", inc.name));
        let next = storage.join(format!("{}.sieve", inc.name));
        collect_script(probe, &next, storage, &conditions, depth + 1, visited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "require [\"copy\", \"fileinto\"];\r\n\
        # semester\r\n\
        /* block\r\n comment */\r\n\
        if header :contains \"from\" \"chef@sorsele.se\" {\r\n\
            redirect :copy \"anna.privat@gmail.com\";\r\n\
        } elsif anyof (size :over 1M, not exists \"x-spam\") {\r\n\
            redirect \"Anna <anna@outlook.com>\";\r\n\
            keep;\r\n\
        } else {\r\n\
            redirect \"arkiv@sorsele.se\";\r\n\
        }\r\n\
        vacation :subject \"Borta\" text:\r\n\
        Hej,\r\n\
        ..punkt\r\n\
        .\r\n\
        ;\r\n\
        redirect [\"a@x.se\", \"b@y.se\"];\r\n";

    #[test]
    fn finds_redirects_with_their_conditions() {
        let got = read_script(SCRIPT);
        assert_eq!(got.problems, vec![]);
        let r = &got.value.redirects;
        let summary: Vec<(&str, bool, String)> = r
            .iter()
            .map(|r| (r.target.as_str(), r.keeps_copy, r.conditions.join(" / ")))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "anna.privat@gmail.com",
                    true,
                    "if header :contains \"from\" \"chef@sorsele.se\"".to_string()
                ),
                (
                    "Anna <anna@outlook.com>",
                    true,
                    "elsif anyof(size :over 1048576, not exists \"x-spam\")".to_string()
                ),
                ("arkiv@sorsele.se", false, "else".to_string()),
                ("a@x.se", false, String::new()),
                ("b@y.se", false, String::new()),
            ]
        );
        assert_eq!(r[0].line, 6);
    }

    #[test]
    fn multiline_strings_unstuff_dots() {
        let cmds = parse_sieve("vacation text:  # c\n.x\n..y\n.\n;").unwrap();
        assert_eq!(cmds[0].args, vec![Arg::Str(".x\n.y\n".to_string())]);
    }

    #[test]
    fn escapes_follow_rfc_5228() {
        let cmds = parse_sieve(r#"redirect "a\"b\\c\d@x";"#).unwrap();
        assert_eq!(cmds[0].args, vec![Arg::Str("a\"b\\cd@x".to_string())]);
    }

    #[test]
    fn syntax_errors_name_their_line_and_yield_nothing() {
        let got = read_script("redirect \"a@b\";\nif true {\n redirect \"c@d\"\n}\n");
        assert!(got.value.redirects.is_empty());
        assert_eq!(got.problems[0].line, 4);
        for (text, line) in [
            ("redirect \"open", 1),
            ("/* open", 1),
            ("x text:\nno end", 1),
            ("if true {", 1),
            ("if true { keep; }}", 1),
            ("\n\n@", 3),
            ("redirect 99999999999999999999999;", 1),
        ] {
            let got = read_script(text);
            assert_eq!(got.problems.len(), 1, "{text}");
            assert_eq!(got.problems[0].line, line, "{text}");
        }
    }

    #[test]
    fn includes_are_found() {
        let got = read_script("if true { include :personal \"ferie\"; }\ninclude :global \"x\";");
        assert_eq!(
            got.value.includes,
            vec![
                Include {
                    name: "ferie".to_string(),
                    global: false,
                    conditions: vec!["if true".to_string()]
                },
                Include {
                    name: "x".to_string(),
                    global: true,
                    conditions: vec![]
                },
            ]
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("if {} true {{ keep; }}", "not ".repeat(100_000));
        assert_eq!(read_script(&deep).problems.len(), 1);
        let blocks = format!("{}{}", "if true {".repeat(100_000), "}".repeat(100_000));
        assert_eq!(read_script(&blocks).problems.len(), 1);
    }
}
