//! The user's active Sieve script (Dovecot Pigeonhole: `~/.dovecot.sieve`, usually a symlink
//! into `~/sieve/`), read the way Pigeonhole runs it, and every place it can send mail.
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
//! `K`/`M`/`G`, and tags; then an evaluator that follows every path through the script:
//!
//! - Encoded characters (RFC 5228 2.4.2.4, `${hex:40}`, `${unicode:40}`) are decoded in every
//!   string, before variables, as Pigeonhole does (`dear${hex:24 7b}name}` reads `${name}`).
//! - Variables (RFC 5229): `set` with its modifiers (`:lower`, `:upper`, `:lowerfirst`,
//!   `:upperfirst`, `:quotewildcard`, `:quoteregex`, `:encodeurl`, `:length`, applied by
//!   precedence), references in strings (`${name}`, case ignored, unknown ones empty, one pass),
//!   values cut at 4 KiB, at most 255 variables a scope. A variable set in several branches holds
//!   every value a branch gives it, each with that branch's condition, so `redirect "${fwd}"`
//!   reports every target a path can reach, the conditions in the rule's text. Match variables
//!   (`${1}`), unknown namespaces and text taken from the message are not known here: a target
//!   using them keeps the reference as written and says why in its `problem`.
//! - `include` (RFC 6609) of `:personal` scripts, found through a lookup the probe gives
//!   (`~/sieve/<name>.sieve`), with Pigeonhole's limits: 10 levels, 255 scripts, no recursion;
//!   `:optional`; `global` variables shared between scripts (and the `global.` namespace);
//!   `return`. `:global` scripts live outside the user's files and are reported as not read.
//! - `stop` (and RFC 5463 `error`) end every path through them; `return` ends the included
//!   script. `reject` does not end a script: Pigeonhole refuses it beside a redirect at run
//!   time, but the reader reports the redirect all the same, erring toward "may forward".
//! - Deliveries: `redirect` (RFC 3894 `:copy`, or a `keep`/`fileinto` beside it, keeps a copy;
//!   RFC 6134 `:list` targets cannot be seen), `report` (vnd.dovecot.report, a copy to an
//!   address), and programs that get the message (vnd.dovecot `pipe`, `filter`, `execute
//!   :pipe`) as kind `pipe`. Addresses are normalised as RFC 5322 reads them.
//!
//! What Pigeonhole would refuse to compile (a syntax error, a missing include, recursion, a
//! limit passed) runs nothing: the reader then reports no delivery from it, and the problems.
//! A command the reader does not know may still be one the server knows. Either way, if the
//! script mentions forwarding (a `redirect`, `pipe`, ...), the reading is *unsure*: it may
//! forward (see [`rules`](super::rules)). `require` is not checked: a script using an extension
//! without requiring it is refused by Pigeonhole, and the reader reports what it would do.

use super::rules::{
    Delivery, MAX_CONDITION_CHARS, Reading, delivery, looks_like_address, mentions_any,
    merge_conditions,
};
use super::text::{Problem, decode, split_addresses, truncate_chars};
use super::{Probe, Root, read_rule_file};
use crate::collect::userfile::{self, ReadError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use vakt_proto::model::ForwardKind;

pub const CLIENT: &str = "sieve";

/// Nesting deeper than this is refused; real scripts nest a few levels.
const MAX_DEPTH: usize = 64;
/// Pigeonhole's `sieve_include_max_nesting_depth`.
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// Pigeonhole's `sieve_include_max_includes`: scripts in one include tree.
pub const MAX_INCLUDES: usize = 255;
/// Pigeonhole's `sieve_variables_max_scope_size`.
pub const MAX_VARIABLES: usize = 255;
/// Pigeonhole's `sieve_variables_max_variable_size`, in bytes.
pub const MAX_VARIABLE_SIZE: usize = 4096;
/// Values one variable keeps across branches before the reader calls it unknown.
const MAX_VALUES: usize = 32;
/// Targets one `redirect` may expand to before the reader calls it unknown.
const MAX_TARGETS: usize = 64;
/// Commands followed in one evaluation: includes repeated at every level could otherwise make
/// the walk exponential. Real scripts take a few hundred.
const MAX_STEPS: usize = 200_000;
/// Words whose presence in a script the reader could not read means it may forward.
const FORWARD_WORDS: &[&str] = &["redirect", "pipe", "execute", "filter", "report", "include"];

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

/// Parses a Sieve script and decodes its encoded characters (RFC 5228 2.4.2.4) in every
/// string. Pigeonhole decodes them only when `encoded-character` is required; without it a
/// script holding one is refused or redirects to no valid address, so decoding always costs
/// nothing and reads every script that runs.
pub fn parse_script(text: &str) -> Result<Vec<Command>, Problem> {
    let mut commands = parse_sieve(text)?;
    decode_commands(&mut commands)?;
    Ok(commands)
}

fn decode_commands(commands: &mut [Command]) -> Result<(), Problem> {
    for c in commands {
        let line = c.line;
        decode_args(&mut c.args, line)?;
        decode_tests(&mut c.tests, line)?;
        if let Some(block) = &mut c.block {
            decode_commands(block)?;
        }
    }
    Ok(())
}

fn decode_tests(tests: &mut [Test], line: usize) -> Result<(), Problem> {
    for t in tests {
        decode_args(&mut t.args, line)?;
        decode_tests(&mut t.tests, line)?;
    }
    Ok(())
}

fn decode_args(args: &mut [Arg], line: usize) -> Result<(), Problem> {
    let one = |s: &mut String| -> Result<(), Problem> {
        *s = decode_encoded(s).map_err(|e| Problem::new(line, e))?;
        Ok(())
    };
    for a in args {
        match a {
            Arg::Str(s) => one(s)?,
            Arg::List(l) => l.iter_mut().try_for_each(one)?,
            Arg::Num(_) | Arg::Tag(_) => {}
        }
    }
    Ok(())
}

/// `s` with its `${hex:...}` and `${unicode:...}` decoded. Anything that is not a well-formed
/// encoding stays as written; a code point outside Unicode is an error, as the RFC says.
pub fn decode_encoded(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match encoded(after)? {
            Some((text, used)) => {
                out.push_str(&text);
                rest = &after[used..];
            }
            None => {
                out.push('$');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The encoding after a `${`: its decoded text and the bytes it took (through the `}`), or
/// `None` when this is no encoding.
fn encoded(after: &str) -> Result<Option<(String, usize)>, String> {
    let prefix = |p: &str| {
        after
            .get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
            .then_some(p.len())
    };
    let (hex, start) = match (prefix("hex:"), prefix("unicode:")) {
        (Some(n), _) => (true, n),
        (_, Some(n)) => (false, n),
        _ => return Ok(None),
    };
    let Some(end) = after[start..].find('}') else {
        return Ok(None);
    };
    let body = &after[start..start + end];
    let blank = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    if !body.chars().all(|c| c.is_ascii_hexdigit() || blank(c)) {
        return Ok(None);
    }
    let items: Vec<&str> = body.split(blank).filter(|w| !w.is_empty()).collect();
    if items.is_empty() {
        return Ok(None);
    }
    let text = if hex {
        if items.iter().any(|w| w.len() > 2) {
            return Ok(None);
        }
        let bytes: Vec<u8> = items
            .iter()
            .filter_map(|w| u8::from_str_radix(w, 16).ok())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        let mut text = String::new();
        for w in items {
            let code = u32::from_str_radix(w.trim_start_matches('0'), 16)
                .ok()
                .or_else(|| w.trim_start_matches('0').is_empty().then_some(0));
            match code.and_then(char::from_u32) {
                Some(c) => text.push(c),
                None => return Err(format!("${{unicode:{w}}} is not a Unicode character")),
            }
        }
        text
    };
    Ok(Some((text, start + end + 1)))
}

/// Where an included script was looked for, and what was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The script's text and the device path of the file it is in.
    Found {
        file: String,
        text: String,
    },
    Missing {
        file: String,
    },
    /// It could not be read. `may_forward` when it could still be run by the mail system
    /// (larger than the agent reads), so what it does is unknown.
    Unreadable {
        file: String,
        message: String,
        may_forward: bool,
    },
}

/// Reads a script alone, its includes not followed (each is a problem): for tests and fuzzing.
pub fn read_script(text: &str) -> Reading {
    evaluate("script", text, &mut |name| Source::Unreadable {
        file: name.to_string(),
        message: "includes are not followed here".to_string(),
        may_forward: false,
    })
}

/// Reads the script `text` (from `file`) and the personal scripts it includes, which `lookup`
/// finds by name, and reports every delivery a path through them makes.
pub fn evaluate(file: &str, text: &str, lookup: &mut dyn FnMut(&str) -> Source) -> Reading {
    let mut e = Evaluator {
        lookup,
        scripts: BTreeMap::new(),
        out: Reading::default(),
        refused: None,
        not_understood: None,
        unreadable: None,
        forwarding: false,
        steps: 0,
        depth: 0,
    };
    let main = match parse_script(text) {
        Ok(commands) => Rc::new(Script::new(file, commands)),
        Err(p) => {
            e.forwarding = mentions_any(text, FORWARD_WORDS);
            e.refuse(file, p);
            return e.finish();
        }
    };
    e.compile(&main, &mut vec![String::new()]);
    if e.refused.is_none() {
        let mut conditions = Vec::new();
        e.run(&main, Vars::new(), &mut conditions);
    }
    e.finish()
}

/// A parsed script: where it is, its commands, the variables it declares `global`, and the
/// scripts it includes (personal ones, by name).
struct Script {
    file: String,
    commands: Vec<Command>,
    globals: BTreeSet<String>,
}

impl Script {
    fn new(file: &str, commands: Vec<Command>) -> Self {
        let mut globals = BTreeSet::new();
        visit(&commands, &mut |c| {
            if c.name == "global" {
                for a in &c.args {
                    globals.extend(arg_strings(a).into_iter().map(|s| s.to_lowercase()));
                }
            }
        });
        Self {
            file: file.to_string(),
            commands,
            globals,
        }
    }
}

/// Calls `f` on every command of a tree.
fn visit(commands: &[Command], f: &mut dyn FnMut(&Command)) {
    for c in commands {
        f(c);
        if let Some(block) = &c.block {
            visit(block, f);
        }
    }
}

/// A value a variable may hold on some path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    text: String,
    /// What in `text` is not known here (a match variable, text from the message), as written.
    unknown: Vec<String>,
    /// The conditions under which it was assigned.
    conditions: Vec<String>,
    /// Stands for more values than the reader keeps: it stays so through later branches.
    saturated: bool,
}

impl Value {
    fn known(text: String) -> Self {
        Self {
            text,
            unknown: Vec::new(),
            conditions: Vec::new(),
            saturated: false,
        }
    }

    fn unknown(written: String, why: String) -> Self {
        Self {
            text: written,
            unknown: vec![why],
            conditions: Vec::new(),
            saturated: false,
        }
    }
}

/// Variables by lower-case name, each with every value a path gives it.
type Vars = BTreeMap<String, Vec<Value>>;

/// The variables on one point of the walk: the running script's own and the global ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct State {
    locals: Vars,
    globals: Vars,
}

fn merge_vars(a: Vars, b: Vars) -> Vars {
    let unset = || vec![Value::known(String::new())];
    let names: BTreeSet<String> = a.keys().chain(b.keys()).cloned().collect();
    let mut a = a;
    let mut b = b;
    names
        .into_iter()
        .map(|name| {
            let mut values = a.remove(&name).unwrap_or_else(unset);
            for v in b.remove(&name).unwrap_or_else(unset) {
                if !values
                    .iter()
                    .any(|w| w.text == v.text && w.unknown == v.unknown)
                {
                    values.push(v);
                }
            }
            if values.len() > MAX_VALUES || values.iter().any(|v| v.saturated) {
                let mut v = Value::unknown(
                    format!("${{{name}}}"),
                    format!("${{{name}}} (more than {MAX_VALUES} possible values)"),
                );
                v.saturated = true;
                values = vec![v];
            }
            (name, values)
        })
        .collect()
}

fn merge(a: Option<State>, b: Option<State>) -> Option<State> {
    match (a, b) {
        (Some(a), Some(b)) => Some(State {
            locals: merge_vars(a.locals, b.locals),
            globals: merge_vars(a.globals, b.globals),
        }),
        (a, b) => a.or(b),
    }
}

/// Where the paths through a block go: on to the next command, out of the script (`return`),
/// out of the enclosing loop (`break`). A path that stopped is in none.
#[derive(Default)]
struct Flow {
    next: Option<State>,
    returned: Option<State>,
    broken: Option<State>,
}

/// The arguments of a command: its tags (with the value of those that take one) and the
/// positional ones.
struct Args<'a> {
    tags: Vec<&'a str>,
    values: BTreeMap<&'a str, &'a Arg>,
    positional: Vec<&'a Arg>,
}

impl Args<'_> {
    fn has(&self, tag: &str) -> bool {
        self.tags.contains(&tag)
    }
}

fn split_args<'a>(args: &'a [Arg], valued: &[&str]) -> Args<'a> {
    let mut out = Args {
        tags: Vec::new(),
        values: BTreeMap::new(),
        positional: Vec::new(),
    };
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        match a {
            Arg::Tag(t) => {
                out.tags.push(t.as_str());
                if valued.contains(&t.as_str())
                    && let Some(v) = it.next_if(|n| !matches!(n, Arg::Tag(_)))
                {
                    out.values.insert(t.as_str(), v);
                }
            }
            other => out.positional.push(other),
        }
    }
    out
}

fn arg_strings(a: &Arg) -> Vec<String> {
    match a {
        Arg::Str(s) => vec![s.clone()],
        Arg::List(l) => l.clone(),
        Arg::Num(_) | Arg::Tag(_) => Vec::new(),
    }
}

/// Commands that neither deliver anywhere nor change what the reader follows.
const QUIET: &[&str] = &[
    "require",
    "keep",
    "discard",
    "fileinto",
    "vacation",
    "setflag",
    "addflag",
    "removeflag",
    "mark",
    "unmark",
    "reject",
    "ereject",
    "notify",
    "denotify",
    "addheader",
    "deleteheader",
    "debug_log",
    "replace",
    "enclose",
    "convert",
    "global",
];

struct Evaluator<'l> {
    lookup: &'l mut dyn FnMut(&str) -> Source,
    /// Personal scripts by name, as compiled; `None` when missing or unreadable.
    scripts: BTreeMap<String, Option<Rc<Script>>>,
    out: Reading,
    /// Why Pigeonhole would refuse the whole script: nothing of it runs.
    refused: Option<(String, Problem)>,
    /// The first command the reader does not know.
    not_understood: Option<(String, Problem)>,
    /// An included script that could not be read but could still run.
    unreadable: Option<(String, Problem)>,
    /// Some script of the tree can send mail on (or mentions it, if it did not parse).
    forwarding: bool,
    steps: usize,
    /// Includes being run, one inside the other.
    depth: usize,
}

impl Evaluator<'_> {
    fn refuse(&mut self, file: &str, p: Problem) {
        self.out.problem(file, p.clone());
        self.refused.get_or_insert((file.to_string(), p));
    }

    fn not_understood(&mut self, file: &str, p: Problem) {
        self.out.problem(file, p.clone());
        self.not_understood.get_or_insert((file.to_string(), p));
    }

    fn finish(mut self) -> Reading {
        if self.refused.is_some() {
            self.out.deliveries.clear();
        }
        let doubt = self.refused.take().or(self.not_understood.take());
        self.out.unsure = self
            .unreadable
            .take()
            .or(if self.forwarding { doubt } else { None });
        self.out.dedup();
        self.out
    }

    /// What Pigeonhole does when compiling: load every personal script the tree includes,
    /// once each, checking names, nesting, count and recursion. `chain` holds the names of the
    /// scripts on the way here ("" for the active one).
    fn compile(&mut self, script: &Script, chain: &mut Vec<String>) {
        let mut includes = Vec::new();
        visit(&script.commands, &mut |c| match c.name.as_str() {
            "include" => includes.push(c.clone()),
            "redirect" | "pipe" | "filter" | "report" => self.forwarding = true,
            "execute" if split_args(&c.args, &["input", "output"]).has("pipe") => {
                self.forwarding = true;
            }
            _ => {}
        });
        for c in includes {
            let args = split_args(&c.args, &[]);
            if args.has("global") {
                continue;
            }
            let name = match args.positional.as_slice() {
                [Arg::Str(name)] => name.clone(),
                _ => {
                    let p = Problem::new(c.line, "include needs one script name");
                    self.refuse(&script.file, p);
                    continue;
                }
            };
            if name.is_empty() || name.contains(['/', '\0']) || name.contains("${") {
                let p = Problem::new(
                    c.line,
                    format!("include of an invalid script name {name:?}"),
                );
                self.refuse(&script.file, p);
                continue;
            }
            if chain.contains(&name) {
                let p = Problem::new(c.line, format!("include {name:?} includes itself"));
                self.refuse(&script.file, p);
                continue;
            }
            if chain.len() > MAX_INCLUDE_DEPTH {
                let p = Problem::new(
                    c.line,
                    format!("includes nested deeper than {MAX_INCLUDE_DEPTH}"),
                );
                self.refuse(&script.file, p);
                continue;
            }
            if self.scripts.contains_key(&name) {
                continue;
            }
            if self.scripts.len() >= MAX_INCLUDES {
                let p = Problem::new(c.line, format!("more than {MAX_INCLUDES} included scripts"));
                self.refuse(&script.file, p);
                return;
            }
            let loaded = match (self.lookup)(&name) {
                Source::Found { file, text } => match parse_script(&text) {
                    Ok(commands) => Some(Rc::new(Script::new(&file, commands))),
                    Err(p) => {
                        self.forwarding |= mentions_any(&text, FORWARD_WORDS);
                        self.refuse(&file, p);
                        None
                    }
                },
                Source::Missing { file } => {
                    if !args.has("optional") {
                        let p = Problem::new(
                            c.line,
                            format!("included script {name:?} ({file}) is missing"),
                        );
                        self.refuse(&script.file, p);
                    }
                    None
                }
                Source::Unreadable {
                    file,
                    message,
                    may_forward,
                } => {
                    let p = Problem::new(0, message);
                    self.out.problem(&file, p.clone());
                    if may_forward {
                        self.unreadable.get_or_insert((file, p));
                    }
                    None
                }
            };
            self.scripts.insert(name.clone(), loaded.clone());
            if let Some(s) = loaded {
                chain.push(name);
                self.compile(&s, chain);
                chain.pop();
            }
        }
    }

    /// Runs a script from its start with the global variables `globals`; the globals on every
    /// path that goes on after it, or `None` when every path stops.
    fn run(
        &mut self,
        script: &Script,
        globals: Vars,
        conditions: &mut Vec<String>,
    ) -> Option<Vars> {
        let state = State {
            locals: Vars::new(),
            globals,
        };
        let flow = self.block(script, &script.commands, state, conditions);
        merge(merge(flow.next, flow.returned), flow.broken).map(|s| s.globals)
    }

    fn block(
        &mut self,
        script: &Script,
        commands: &[Command],
        mut state: State,
        conditions: &mut Vec<String>,
    ) -> Flow {
        let mut flow = Flow::default();
        let keeps_here = commands
            .iter()
            .any(|c| c.name == "keep" || c.name == "fileinto");
        let mut i = 0;
        while let Some(c) = commands.get(i) {
            i += 1;
            self.steps += 1;
            if self.steps > MAX_STEPS {
                if self.not_understood.is_none() {
                    let p = Problem::new(
                        c.line,
                        format!("more than {MAX_STEPS} commands to follow; the rest is not read"),
                    );
                    self.not_understood(&script.file, p);
                }
                return flow;
            }
            match c.name.as_str() {
                "if" => {
                    let mut arms = vec![c];
                    while let Some(n) = commands
                        .get(i)
                        .filter(|n| n.name == "elsif" || n.name == "else")
                    {
                        arms.push(n);
                        i += 1;
                        if n.name == "else" {
                            break;
                        }
                    }
                    let mut after = None;
                    for arm in &arms {
                        conditions.push(truncate_chars(&head(arm), MAX_CONDITION_CHARS));
                        let inner = arm.block.as_deref().unwrap_or_default();
                        let f = self.block(script, inner, state.clone(), conditions);
                        conditions.pop();
                        after = merge(after, f.next);
                        flow.returned = merge(flow.returned.take(), f.returned);
                        flow.broken = merge(flow.broken.take(), f.broken);
                    }
                    if arms.last().is_none_or(|a| a.name != "else") {
                        after = merge(after, Some(state));
                    }
                    match after {
                        Some(s) => state = s,
                        None => return flow,
                    }
                    continue;
                }
                "elsif" | "else" => {
                    let p = Problem::new(c.line, format!("'{}' without an 'if' before it", c.name));
                    self.refuse(&script.file, p);
                }
                "stop" | "error" => return flow,
                "return" => {
                    flow.returned = merge(flow.returned.take(), Some(state));
                    return flow;
                }
                "break" => {
                    flow.broken = merge(flow.broken.take(), Some(state));
                    return flow;
                }
                "set" => self.set(script, c, &mut state, conditions),
                "redirect" => self.redirect(script, c, &state, conditions, keeps_here),
                "report" => {
                    let args = split_args(&c.args, &[]);
                    if let Some(a) = args.positional.last() {
                        self.deliver(
                            script,
                            c,
                            a,
                            &state,
                            conditions,
                            true,
                            ForwardKind::Redirect,
                        );
                    }
                }
                "pipe" | "filter" | "execute" => {
                    self.program(script, c, &mut state, conditions, keeps_here);
                }
                "extracttext" => {
                    let args = split_args(&c.args, &["first"]);
                    if let Some(Arg::Str(name)) = args.positional.last() {
                        let why = format!("text extracted from the message into {name:?}");
                        self.assign(
                            script,
                            c.line,
                            name,
                            vec![Value::unknown(format!("${{{name}}}"), why)],
                            &mut state,
                        );
                    }
                }
                "include" => match self.include(script, c, state, conditions) {
                    Some(s) => state = s,
                    None => return flow,
                },
                name if QUIET.contains(&name) => {}
                "foreverypart" => {}
                name => {
                    let p = Problem::new(c.line, format!("command '{name}' not understood"));
                    self.not_understood(&script.file, p);
                }
            }
            // A block the reader has no special meaning for (a loop over the message's parts,
            // an unknown command's) may run or not.
            if c.name != "if"
                && let Some(inner) = &c.block
            {
                conditions.push(truncate_chars(&head(c), MAX_CONDITION_CHARS));
                let f = self.block(script, inner, state.clone(), conditions);
                conditions.pop();
                flow.returned = merge(flow.returned.take(), f.returned);
                state = merge(merge(Some(state), f.next), f.broken).unwrap_or_default();
            }
        }
        flow.next = Some(state);
        flow
    }

    fn include(
        &mut self,
        script: &Script,
        c: &Command,
        state: State,
        conditions: &mut Vec<String>,
    ) -> Option<State> {
        let args = split_args(&c.args, &[]);
        let Some(Arg::Str(name)) = args.positional.first() else {
            return Some(state);
        };
        if args.has("global") {
            let p = Problem::new(
                c.line,
                format!(
                    "include :global {name:?} not read: global scripts live outside the user's \
                     files, what it does is unknown here"
                ),
            );
            self.out.problem(&script.file, p);
            return Some(state);
        }
        let Some(Some(included)) = self.scripts.get(name).cloned() else {
            return Some(state);
        };
        // Compiling refused recursion; this only keeps the walk's own stack bounded.
        if self.depth > MAX_INCLUDE_DEPTH {
            return Some(state);
        }
        conditions.push(format!("include {name:?}"));
        self.depth += 1;
        let globals = self.run(&included, state.globals, conditions);
        self.depth -= 1;
        conditions.pop();
        globals.map(|globals| State {
            locals: state.locals,
            globals,
        })
    }

    /// The variable a name refers to in `script`: (global?, lower-case name), or `None` for a
    /// name that is no variable name (Pigeonhole refuses it).
    fn variable(script: &Script, name: &str) -> Option<(bool, String)> {
        let lower = name.to_lowercase();
        if let Some(g) = lower.strip_prefix("global.") {
            return is_identifier(g).then(|| (true, g.to_string()));
        }
        is_identifier(&lower).then(|| (script.globals.contains(&lower), lower))
    }

    fn assign(
        &mut self,
        script: &Script,
        line: usize,
        name: &str,
        values: Vec<Value>,
        state: &mut State,
    ) {
        let Some((global, var)) = Self::variable(script, name) else {
            let p = Problem::new(line, format!("{name:?} is not a variable name"));
            self.refuse(&script.file, p);
            return;
        };
        let scope = if global {
            &mut state.globals
        } else {
            &mut state.locals
        };
        scope.insert(var, values);
        if scope.len() > MAX_VARIABLES {
            let p = Problem::new(line, format!("more than {MAX_VARIABLES} variables"));
            self.refuse(&script.file, p);
        }
    }

    fn set(&mut self, script: &Script, c: &Command, state: &mut State, conditions: &[String]) {
        let args = split_args(&c.args, &[]);
        let (Some(Arg::Str(name)), Some(Arg::Str(value)), 2) = (
            args.positional.first(),
            args.positional.get(1),
            args.positional.len(),
        ) else {
            let p = Problem::new(c.line, "set needs a variable name and a value");
            self.refuse(&script.file, p);
            return;
        };
        let mut modifiers: Vec<(u8, &str)> = Vec::new();
        for t in &args.tags {
            match precedence(t) {
                Some(p) if modifiers.iter().any(|(q, _)| *q == p) => {
                    let p = Problem::new(c.line, format!("two modifiers of one precedence (:{t})"));
                    self.refuse(&script.file, p);
                }
                Some(p) => modifiers.push((p, t)),
                None => {
                    let p = Problem::new(c.line, format!("modifier ':{t}' not understood"));
                    self.not_understood(&script.file, p);
                }
            }
        }
        modifiers.sort_by_key(|m| std::cmp::Reverse(m.0));
        let values = match self.expand(script, value, state) {
            Some(values) => values,
            None => vec![Value::unknown(
                value.clone(),
                format!("{value} (more than {MAX_TARGETS} possible values)"),
            )],
        };
        let values = values
            .into_iter()
            .map(|mut v| {
                if v.unknown.is_empty() {
                    for (_, m) in &modifiers {
                        v.text = modify(m, &v.text);
                    }
                }
                // Cut whether known or not: Pigeonhole cuts the value it holds, and a value
                // with unknown parts built from itself ("set a ${a}${a}…" after "${1}")
                // would otherwise grow eightfold per line until the agent runs out of memory.
                v.text = truncate_bytes(&v.text, MAX_VARIABLE_SIZE);
                v.conditions = merge_conditions(&v.conditions, conditions);
                v
            })
            .collect();
        self.assign(script, c.line, name, values, state);
    }

    /// Every value a string may have on this path, its variable references replaced, or
    /// `None` when there would be more than [`MAX_TARGETS`].
    fn expand(&self, script: &Script, s: &str, state: &State) -> Option<Vec<Value>> {
        let mut out = vec![Value::known(String::new())];
        for piece in pieces(s) {
            let alternatives = match piece {
                Piece::Text(t) => vec![Value::known(t.to_string())],
                Piece::Ref(written, inner) => self.reference(script, written, inner, state),
            };
            let mut next = Vec::with_capacity(out.len() * alternatives.len());
            for a in &out {
                for b in &alternatives {
                    // Each reason once: a value built from itself ("${a}${a}") would otherwise
                    // double its list at every `set`.
                    let mut unknown = a.unknown.clone();
                    for why in &b.unknown {
                        if !unknown.contains(why) {
                            unknown.push(why.clone());
                        }
                    }
                    next.push(Value {
                        text: format!("{}{}", a.text, b.text),
                        unknown,
                        conditions: merge_conditions(&a.conditions, &b.conditions),
                        saturated: false,
                    });
                }
            }
            if next.len() > MAX_TARGETS {
                return None;
            }
            out = next;
        }
        Some(out)
    }

    /// The values of one `${...}` reference (`inner` is what is between the braces).
    fn reference(&self, script: &Script, written: &str, inner: &str, state: &State) -> Vec<Value> {
        let lower = inner.to_lowercase();
        if lower.chars().all(|c| c.is_ascii_digit()) {
            return vec![Value::unknown(
                written.to_string(),
                format!("{written} (a match variable)"),
            )];
        }
        let var = if lower.contains('.') {
            lower
                .strip_prefix("global.")
                .filter(|n| !n.contains('.'))
                .map(|n| (true, n.to_string()))
        } else {
            Some((script.globals.contains(&lower), lower))
        };
        match var {
            Some((global, name)) => {
                let scope = if global {
                    &state.globals
                } else {
                    &state.locals
                };
                scope
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| vec![Value::known(String::new())])
            }
            None => vec![Value::unknown(
                written.to_string(),
                format!("{written} (a namespace not known here)"),
            )],
        }
    }

    fn redirect(
        &mut self,
        script: &Script,
        c: &Command,
        state: &State,
        conditions: &[String],
        keeps_here: bool,
    ) {
        let args = split_args(
            &c.args,
            &[
                "notify",
                "ret",
                "bytimerelative",
                "bytimeabsolute",
                "bymode",
            ],
        );
        let Some(target) = args.positional.last() else {
            let p = Problem::new(c.line, "redirect needs an address");
            self.refuse(&script.file, p);
            return;
        };
        let keeps = args.has("copy") || keeps_here;
        if args.has("list") {
            for list in arg_strings(target) {
                let mut d = delivery(&script.file, c.line, list.clone(), ForwardKind::Redirect);
                d.keeps_copy = keeps;
                d.conditions = conditions.to_vec();
                d.problem = format!(
                    "redirects to the members of the list {list:?} (RFC 6134), which cannot be seen here"
                );
                self.out.deliveries.push(d);
            }
            return;
        }
        self.deliver(
            script,
            c,
            target,
            state,
            conditions,
            keeps,
            ForwardKind::Redirect,
        );
    }

    /// Reports a delivery to each address `target` may expand to.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        script: &Script,
        c: &Command,
        target: &Arg,
        state: &State,
        conditions: &[String],
        keeps_copy: bool,
        kind: ForwardKind,
    ) {
        for written in arg_strings(target) {
            let Some(values) = self.expand(script, &written, state) else {
                let mut d = delivery(&script.file, c.line, written.clone(), kind);
                d.keeps_copy = keeps_copy;
                d.conditions = conditions.to_vec();
                d.problem = format!("more than {MAX_TARGETS} possible targets");
                self.out.deliveries.push(d);
                continue;
            };
            for v in values {
                for address in split_addresses(&v.text) {
                    // An empty target is a run-time error, not a delivery.
                    if address.is_empty() {
                        continue;
                    }
                    let problem = if !v.unknown.is_empty() {
                        format!("the target is not known here: {}", v.unknown.join(", "))
                    } else if !looks_like_address(&address) {
                        format!("{address:?} is not a mail address as written")
                    } else {
                        String::new()
                    };
                    self.out.deliveries.push(Delivery {
                        file: script.file.clone(),
                        target: address,
                        kind,
                        keeps_copy,
                        conditions: merge_conditions(&v.conditions, conditions),
                        line: c.line,
                        problem,
                    });
                }
            }
        }
    }

    /// `pipe`, `filter` and `execute :pipe` (vnd.dovecot): a program gets the message.
    fn program(
        &mut self,
        script: &Script,
        c: &Command,
        state: &mut State,
        conditions: &[String],
        keeps_here: bool,
    ) {
        let args = split_args(&c.args, &["input", "output"]);
        if c.name == "execute" {
            if let Some(Arg::Str(name)) = args.values.get("output") {
                let why = format!("the output of a program, in {name:?}");
                self.assign(
                    script,
                    c.line,
                    name,
                    vec![Value::unknown(format!("${{{name}}}"), why)],
                    state,
                );
            }
            if !args.has("pipe") {
                return;
            }
        }
        let mut words = Vec::new();
        for a in &args.positional {
            for s in arg_strings(a) {
                let values = self.expand(script, &s, state).unwrap_or_default();
                words.push(values.first().map_or(s, |v| v.text.clone()));
            }
        }
        let program = words.join(" ");
        let program = program.trim();
        let mut d = delivery(&script.file, c.line, program.to_string(), ForwardKind::Pipe);
        if program.is_empty() {
            // No name (none given, or a variable that holds nothing here): still a program
            // that gets the message, never a silent empty target.
            d.problem = format!("`{}` names no program the reader can see", c.name);
        }
        // `filter` gives the message back; `pipe :copy` keeps it.
        d.keeps_copy = c.name == "filter" || args.has("copy") || keeps_here;
        d.conditions = conditions.to_vec();
        self.out.deliveries.push(d);
    }
}

/// A command as source text for a rule's description: its name and tests.
fn head(c: &Command) -> String {
    let mut head = c.name.clone();
    for t in &c.tests {
        head.push(' ');
        head.push_str(&render_test(t));
    }
    head
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A piece of a string: text, or a variable reference as written and what is in its braces.
enum Piece<'s> {
    Text(&'s str),
    Ref(&'s str, &'s str),
}

/// Splits a string at its variable references (RFC 5229 3: `${` namespaces and a name or
/// number `}`); anything else, `${BAD${x}` included, is text, scanned once.
fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while let Some(off) = s[i..].find("${") {
        let at = i + off;
        let inner_start = at + 2;
        let reference = s[inner_start..].find('}').and_then(|end| {
            let inner = &s[inner_start..inner_start + end];
            let parts: Vec<&str> = inner.split('.').collect();
            let (last, namespaces) = parts.split_last()?;
            let ok = namespaces.iter().all(|n| is_identifier(n))
                && (is_identifier(last)
                    || (!last.is_empty() && last.chars().all(|c| c.is_ascii_digit())));
            ok.then_some((inner, inner_start + end + 1))
        });
        match reference {
            Some((inner, end)) => {
                if text_start < at {
                    out.push(Piece::Text(&s[text_start..at]));
                }
                out.push(Piece::Ref(&s[at..end], inner));
                text_start = end;
                i = end;
            }
            None => i = at + 1,
        }
    }
    if text_start < s.len() {
        out.push(Piece::Text(&s[text_start..]));
    }
    out
}

/// A `set` modifier's precedence (RFC 5229 4.1, RFC 5435 for `:encodeurl`, Pigeonhole's
/// `:quoteregex`); higher ones apply first.
fn precedence(modifier: &str) -> Option<u8> {
    Some(match modifier {
        "lower" | "upper" => 40,
        "lowerfirst" | "upperfirst" => 30,
        "quotewildcard" | "quoteregex" => 20,
        "encodeurl" => 15,
        "length" => 10,
        _ => return None,
    })
}

fn modify(modifier: &str, s: &str) -> String {
    let first = |f: fn(&char) -> String| {
        let mut chars = s.chars();
        chars
            .next()
            .map(|c| f(&c) + chars.as_str())
            .unwrap_or_default()
    };
    let escape = |special: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if special.contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    match modifier {
        "lower" => s.to_ascii_lowercase(),
        "upper" => s.to_ascii_uppercase(),
        "lowerfirst" => first(|c| c.to_ascii_lowercase().to_string()),
        "upperfirst" => first(|c| c.to_ascii_uppercase().to_string()),
        "quotewildcard" => escape("*?\\"),
        "quoteregex" => escape("\\^$.[]|()?*+{}"),
        "encodeurl" => {
            let mut out = String::with_capacity(s.len());
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
        "length" => s.chars().count().to_string(),
        _ => s.to_string(),
    }
}

/// The first `max` bytes of `s`, never splitting a character (Pigeonhole cuts values so).
fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
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

/// A user's script file as the evaluator sees it, read with the agent's safe reader.
fn load(root: &Root, uid: u32, path: &Path) -> Source {
    // Rules and errors name the file that is really read, not the link to it.
    let file = match userfile::real_path(root, path) {
        Ok(Some(real)) => root.display(&real),
        Ok(None) | Err(_) => path.display().to_string(),
    };
    match read_rule_file(root, path, uid) {
        Ok(Some(bytes)) => Source::Found {
            file,
            text: decode(&bytes),
        },
        Ok(None) => Source::Missing { file },
        Err(e) => Source::Unreadable {
            file,
            may_forward: matches!(e, ReadError::TooLarge { .. }),
            message: e.to_string(),
        },
    }
}

/// Reports the deliveries of the user's active script (and of its personal includes).
pub fn collect(probe: &mut Probe<'_>) {
    let home = PathBuf::from(&probe.user.home);
    let storage = home.join("sieve");
    let (root, uid) = (probe.root, probe.user.uid);
    let reading = match load(root, uid, &home.join(".dovecot.sieve")) {
        Source::Missing { .. } => return,
        Source::Unreadable {
            file,
            message,
            may_forward,
        } => Reading {
            problems: vec![(file.clone(), Problem::new(0, message.clone()))],
            unsure: may_forward.then(|| (file, Problem::new(0, message))),
            ..Reading::default()
        },
        Source::Found { file, text } => evaluate(&file, &text, &mut |name| {
            load(root, uid, &storage.join(format!("{name}.sieve")))
        }),
    };
    probe.deliveries(CLIENT, ForwardKind::Redirect, &file_name, reading);
}

/// A script as a rule names it: its file name.
fn file_name(file: &str) -> String {
    Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string())
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

    /// (target, keeps copy, conditions, problem) of each delivery.
    fn summary(r: &Reading) -> Vec<(String, bool, String, String)> {
        r.deliveries
            .iter()
            .map(|d| {
                (
                    d.target.clone(),
                    d.keeps_copy,
                    d.conditions.join(" / "),
                    d.problem.clone(),
                )
            })
            .collect()
    }

    fn targets(text: &str) -> Vec<String> {
        let r = read_script(text);
        assert_eq!(r.problems, vec![], "{text}");
        r.deliveries.into_iter().map(|d| d.target).collect()
    }

    #[test]
    fn finds_redirects_with_their_conditions() {
        let got = read_script(SCRIPT);
        assert_eq!(got.problems, vec![]);
        let s = |t: &str, k: bool, c: &str| (t.to_string(), k, c.to_string(), String::new());
        assert_eq!(
            summary(&got),
            vec![
                s(
                    "anna.privat@gmail.com",
                    true,
                    "if header :contains \"from\" \"chef@sorsele.se\""
                ),
                s(
                    "anna@outlook.com",
                    true,
                    "elsif anyof(size :over 1048576, not exists \"x-spam\")"
                ),
                s("arkiv@sorsele.se", false, "else"),
                s("a@x.se", false, ""),
                s("b@y.se", false, ""),
            ]
        );
        assert_eq!(got.deliveries[0].line, 6);
        assert_eq!(got.unsure, None);
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
    fn syntax_errors_name_their_line_and_yield_no_delivery() {
        let got = read_script("redirect \"a@b\";\nif true {\n redirect \"c@d\"\n}\n");
        assert!(got.deliveries.is_empty());
        assert_eq!(got.problems[0].1.line, 4);
        // It mentions redirect: the server may read it otherwise, so it may forward.
        assert_eq!(got.unsure.map(|u| u.1.line), Some(4));
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
            assert_eq!(got.problems[0].1.line, line, "{text}");
        }
        // Nothing in it forwards: a broken script is an error, not a "may forward".
        assert_eq!(read_script("keep\nfileinto \"x\";").unsure, None);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("if {} true {{ keep; }}", "not ".repeat(100_000));
        assert_eq!(read_script(&deep).problems.len(), 1);
        let blocks = format!("{}{}", "if true {".repeat(100_000), "}".repeat(100_000));
        assert_eq!(read_script(&blocks).problems.len(), 1);
    }

    #[test]
    fn variables_are_resolved_in_redirects() {
        for (script, want) in [
            (
                "require \"variables\"; set \"fwd\" \"x@gmail.com\"; redirect \"${fwd}\";",
                vec!["x@gmail.com"],
            ),
            // Names ignore case; the value is one pass, not rescanned.
            (
                "set \"User\" \"anna\"; set \"d\" \"gmail.com\"; redirect \"${USER}@${d}\";",
                vec!["anna@gmail.com"],
            ),
            (
                "set \"s\" \"$\"; set \"x\" \"a@b.se\"; set \"y\" \"${s}{x}\"; redirect \"${y}@ok.se\";",
                vec!["${x}@ok.se"],
            ),
            // An unknown variable is empty; an invalid reference is text.
            (
                "redirect \"anna${nothing}@gmail.com\";",
                vec!["anna@gmail.com"],
            ),
            (
                "set \"Company\" \"gmail.com\"; redirect \"x@${BAD${Company}\";",
                vec!["x@${BADgmail.com"],
            ),
            // Modifiers, by precedence: :lower before :upperfirst whatever the order.
            (
                "set :upperfirst :lower \"a\" \"X@GMAIL.COM\"; redirect \"${a}\";",
                vec!["X@gmail.com"],
            ),
            (
                "set :upper \"a\" \"x@gmail.com\"; redirect \"${a}\";",
                vec!["X@GMAIL.COM"],
            ),
            // The last assignment counts.
            (
                "set \"a\" \"first@sorsele.se\"; set \"a\" \"x@gmail.com\"; redirect \"${a}\";",
                vec!["x@gmail.com"],
            ),
        ] {
            assert_eq!(targets(script), want, "{script}");
        }
    }

    #[test]
    fn modifiers_follow_rfc_5229() {
        assert_eq!(modify("lowerfirst", "ABC"), "aBC");
        assert_eq!(modify("quotewildcard", "a*b?c\\"), "a\\*b\\?c\\\\");
        assert_eq!(modify("length", "åäö"), "3");
        assert_eq!(modify("encodeurl", "a b@c"), "a%20b%40c");
        assert_eq!(modify("quoteregex", "a.b"), "a\\.b");
        let got = read_script("set :length \"n\" \"abc\"; redirect \"x${n}@gmail.com\";");
        assert_eq!(got.deliveries[0].target, "x3@gmail.com");
        let got = read_script("set :lower :upper \"n\" \"a\";");
        assert_eq!(
            got.problems.len(),
            1,
            "two modifiers of one precedence are refused"
        );
    }

    #[test]
    fn conditional_variables_report_every_branch() {
        let got = read_script(
            "require \"variables\";\n\
             if header :contains \"from\" \"chef\" {\n\
               set \"fwd\" \"x@gmail.com\";\n\
             } elsif header :contains \"subject\" \"privat\" {\n\
               set \"fwd\" \"y@outlook.com\";\n\
             }\n\
             if size :under 1M { redirect \"${fwd}\"; }\n",
        );
        assert_eq!(got.problems, vec![]);
        let s = |t: &str, c: &str| (t.to_string(), false, c.to_string(), String::new());
        assert_eq!(
            summary(&got),
            vec![
                s(
                    "x@gmail.com",
                    "if header :contains \"from\" \"chef\" / if size :under 1048576"
                ),
                s(
                    "y@outlook.com",
                    "elsif header :contains \"subject\" \"privat\" / if size :under 1048576"
                ),
                // The path where neither branch ran leaves it empty: no delivery.
            ]
        );
    }

    #[test]
    fn stop_ends_every_path_through_it() {
        assert_eq!(
            targets("stop; redirect \"x@gmail.com\";"),
            Vec::<String>::new()
        );
        assert_eq!(
            targets("if true { stop; } redirect \"x@gmail.com\";"),
            vec!["x@gmail.com"]
        );
        assert_eq!(
            targets("if true { stop; } else { stop; } redirect \"x@gmail.com\";"),
            Vec::<String>::new()
        );
        // A value set on a path that stops never reaches the redirect.
        assert_eq!(
            targets(
                "set \"f\" \"a@sorsele.se\"; if true { set \"f\" \"x@gmail.com\"; stop; } redirect \"${f}\";"
            ),
            vec!["a@sorsele.se"]
        );
        // reject does not end a script.
        assert_eq!(
            targets("reject \"no\"; redirect \"x@gmail.com\";"),
            vec!["x@gmail.com"]
        );
    }

    #[test]
    fn encoded_characters_are_decoded() {
        for (script, want) in [
            ("redirect \"x${hex:40}gmail.com\";", "x@gmail.com"),
            ("redirect \"x${HEX: 40 67 }mail.com\";", "x@gmail.com"),
            ("redirect \"x${unicode:40}gmail.com\";", "x@gmail.com"),
            ("redirect \"x${unicode:0040}gmail.com\";", "x@gmail.com"),
            // Decoded before variables: this spells ${d}.
            (
                "set \"d\" \"gmail.com\"; redirect \"x@${hex:24 7b}d}\";",
                "x@gmail.com",
            ),
        ] {
            assert_eq!(targets(script), vec![want], "{script}");
        }
        // Not an encoding: left as written, and said to be no address.
        let got = read_script("redirect \"x${hex:4g}gmail.com\";");
        assert_eq!(got.deliveries[0].target, "x${hex:4g}gmail.com");
        assert!(got.deliveries[0].problem.contains("not a mail address"));
        let got = read_script("redirect \"${unicode:D800}\";");
        assert_eq!(
            got.problems[0].1.message,
            "${unicode:D800} is not a Unicode character"
        );
        assert!(got.deliveries.is_empty());
    }

    #[test]
    fn unknown_values_keep_the_reference_and_say_why() {
        let got = read_script(
            "if header :matches \"to\" \"*@*\" { redirect \"${1}@gmail.com\"; }\n\
             redirect \"${env.fwd}\";\n\
             extracttext \"body\"; redirect \"${body}\";",
        );
        let s = |t: &str, c: &str, p: &str| (t.to_string(), false, c.to_string(), p.to_string());
        assert_eq!(
            summary(&got),
            vec![
                s(
                    "${1}@gmail.com",
                    "if header :matches \"to\" \"*@*\"",
                    "the target is not known here: ${1} (a match variable)"
                ),
                s(
                    "${env.fwd}",
                    "",
                    "the target is not known here: ${env.fwd} (a namespace not known here)"
                ),
                s(
                    "${body}",
                    "",
                    "the target is not known here: text extracted from the message into \"body\""
                ),
            ]
        );
    }

    #[test]
    fn a_value_built_from_itself_stays_within_the_variable_size() {
        // Each line would multiply the value eightfold: 8^5 copies of "${1}" (160 KiB) and as
        // many reasons after five lines, 8^12 (256 TiB) after twelve, if unknown values were
        // not cut. The known part of a value is cut, and so is the written form of one with
        // unknown parts; each reason is said once.
        let grow = "set \"a\" \"${a}${a}${a}${a}${a}${a}${a}${a}\";\n";
        for lines in [5, 12] {
            let got = read_script(&format!(
                "if header :matches \"to\" \"*\" {{ set \"a\" \"${{1}}\"; }}\n{}redirect \"${{a}}\";",
                grow.repeat(lines)
            ));
            assert!(!got.deliveries.is_empty(), "{got:?}");
            for d in &got.deliveries {
                assert!(d.target.len() <= MAX_VARIABLE_SIZE, "{}", d.target.len());
                assert!(d.problem.len() < 200, "{}", d.problem);
            }
        }
    }

    #[test]
    fn values_are_cut_at_the_variable_size() {
        let big = "a".repeat(5000);
        let got = read_script(&format!(
            "set \"v\" \"{big}\"; set :length \"n\" \"${{v}}\"; redirect \"${{n}}@x.se\";"
        ));
        assert_eq!(got.deliveries[0].target, "4096@x.se");
        assert_eq!(truncate_bytes("åäö", 3), "å");
    }

    #[test]
    fn too_many_values_or_variables_are_not_guessed() {
        let mut script = String::new();
        for i in 0..40 {
            script.push_str(&format!(
                "if header :is \"x\" \"{i}\" {{ set \"f\" \"u{i}@x.se\"; }}\n"
            ));
        }
        script.push_str("redirect \"${f}\";");
        let got = read_script(&script);
        assert_eq!(got.deliveries.len(), 1);
        assert!(
            got.deliveries[0]
                .problem
                .contains("more than 32 possible values")
        );

        let many: String = (0..300).map(|i| format!("set \"v{i}\" \"x\";\n")).collect();
        let got = read_script(&format!("{many}redirect \"x@gmail.com\";"));
        assert_eq!(got.problems[0].1.message, "more than 255 variables");
        assert!(got.deliveries.is_empty(), "Pigeonhole refuses the script");
        assert!(got.unsure.is_some());
    }

    #[test]
    fn arguments_of_tags_are_no_targets() {
        assert_eq!(
            targets("redirect :notify \"success\" :ret \"full\" \"x@gmail.com\";"),
            vec!["x@gmail.com"]
        );
        let got = read_script("redirect :list \"tag:example.com,2024:friends\";");
        assert!(got.deliveries[0].problem.contains("RFC 6134"));
    }

    #[test]
    fn programs_are_pipes() {
        let got = read_script(
            "require [\"vnd.dovecot.pipe\", \"vnd.dovecot.execute\"];\n\
             pipe :copy \"sendmail-wrapper\" [\"x@gmail.com\"];\n\
             execute :output \"out\" \"date\";\n\
             execute :pipe \"archive\";\n\
             report \"abuse\" \"spam\" \"abuse@example.org\";",
        );
        let kinds: Vec<(ForwardKind, &str, bool)> = got
            .deliveries
            .iter()
            .map(|d| (d.kind, d.target.as_str(), d.keeps_copy))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (ForwardKind::Pipe, "sendmail-wrapper x@gmail.com", true),
                (ForwardKind::Pipe, "archive", false),
                (ForwardKind::Redirect, "abuse@example.org", true),
            ]
        );
    }

    #[test]
    fn unknown_commands_are_unsure_only_beside_a_forward() {
        let got = read_script("vnd_acme_forward \"x@gmail.com\";\nredirect \"a@sorsele.se\";");
        assert_eq!(got.deliveries.len(), 1, "what is understood still counts");
        let (file, p) = got.unsure.unwrap();
        assert_eq!(file, "script");
        assert_eq!(
            p,
            Problem::new(1, "command 'vnd_acme_forward' not understood")
        );
        let got = read_script("vnd_acme_flag \"x\";\nkeep;");
        assert_eq!(got.unsure, None);
        assert_eq!(got.problems.len(), 1);
    }

    /// Scripts by name, for includes.
    fn lookup(scripts: &[(&str, &str)]) -> impl FnMut(&str) -> Source {
        let scripts: BTreeMap<String, String> = scripts
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        move |name| {
            let file = format!("/home/anna/sieve/{name}.sieve");
            match scripts.get(name) {
                Some(text) => Source::Found {
                    file,
                    text: text.clone(),
                },
                None => Source::Missing { file },
            }
        }
    }

    const MAIN: &str = "/home/anna/sieve/main.sieve";

    #[test]
    fn includes_share_global_variables_only() {
        let mut l = lookup(&[
            (
                "dest",
                "require [\"include\", \"variables\"]; global \"fwd\"; set \"fwd\" \"x@gmail.com\"; set \"local\" \"y@gmail.com\";",
            ),
            (
                "send",
                "global \"fwd\"; redirect \"${fwd}\"; redirect \"${local}x@sorsele.se\";",
            ),
        ]);
        let got = evaluate(
            MAIN,
            "require [\"include\", \"variables\"];\ninclude :personal \"dest\";\nif true { include \"send\"; }",
            &mut l,
        );
        assert_eq!(got.problems, vec![]);
        let s = |t: &str, c: &str| (t.to_string(), false, c.to_string(), String::new());
        assert_eq!(
            summary(&got),
            vec![
                // Set in one included script, used in another: the path names both.
                s(
                    "x@gmail.com",
                    "include \"dest\" / if true / include \"send\""
                ),
                s("x@sorsele.se", "if true / include \"send\""),
            ]
        );
        assert_eq!(got.deliveries[0].file, "/home/anna/sieve/send.sieve");
        // The global namespace needs no declaration.
        let mut l = lookup(&[("dest", "set \"global.fwd\" \"x@gmail.com\";")]);
        let got = evaluate(
            MAIN,
            "include \"dest\"; redirect \"${global.fwd}\";",
            &mut l,
        );
        assert_eq!(got.deliveries[0].target, "x@gmail.com");
    }

    #[test]
    fn return_and_stop_in_included_scripts() {
        let mut l = lookup(&[
            ("ret", "return; redirect \"never@gmail.com\";"),
            ("halt", "stop;"),
        ]);
        let got = evaluate(
            MAIN,
            "include \"ret\"; redirect \"after-return@gmail.com\"; include \"halt\"; redirect \"never2@gmail.com\";",
            &mut l,
        );
        let t: Vec<&str> = got.deliveries.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(t, vec!["after-return@gmail.com"]);
    }

    #[test]
    fn includes_pigeonhole_refuses_run_nothing() {
        let refused = |scripts: &[(&str, &str)], main: &str| {
            let got = evaluate(MAIN, main, &mut lookup(scripts));
            assert!(got.deliveries.is_empty(), "{main}");
            assert!(got.unsure.is_some(), "{main}");
            got.problems[0].1.message.clone()
        };
        assert_eq!(
            refused(
                &[("a", "include \"a\";")],
                "include \"a\"; redirect \"x@gmail.com\";"
            ),
            "include \"a\" includes itself"
        );
        assert!(
            refused(&[], "include \"borta\"; redirect \"x@gmail.com\";")
                .starts_with("included script \"borta\" (/home/anna/sieve/borta.sieve) is missing")
        );
        assert_eq!(
            refused(&[], "include \"../x\"; redirect \"x@gmail.com\";"),
            "include of an invalid script name \"../x\""
        );
        assert_eq!(
            refused(&[("b", "redirect \"x@gmail.com\"")], "include \"b\";"),
            "expected ';' or '{', found the end of the script (truncated?)"
        );
        // Eleven levels: one too many.
        let chain: Vec<(String, String)> = (0..12)
            .map(|i| (format!("s{i}"), format!("include \"s{}\";", i + 1)))
            .collect();
        let chain: Vec<(&str, &str)> = chain
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            refused(&chain, "include \"s0\"; redirect \"x@gmail.com\";"),
            "includes nested deeper than 10"
        );
        // Ten levels are fine.
        let mut ten = chain.clone();
        ten[9].1 = "redirect \"deep@gmail.com\";";
        let got = evaluate(MAIN, "include \"s0\";", &mut lookup(&ten));
        assert_eq!(got.problems, vec![]);
        assert_eq!(got.deliveries[0].target, "deep@gmail.com");
        // :optional makes a missing script nothing.
        let got = evaluate(
            MAIN,
            "include :optional \"borta\"; redirect \"x@gmail.com\";",
            &mut lookup(&[]),
        );
        assert_eq!(got.problems, vec![]);
        assert_eq!(got.deliveries.len(), 1);
    }

    #[test]
    fn more_than_255_scripts_are_refused() {
        let names: Vec<(String, String)> = (0..300)
            .map(|i| (format!("s{i}"), String::from("keep;")))
            .collect();
        let scripts: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let main: String = (0..300).map(|i| format!("include \"s{i}\";\n")).collect();
        let got = evaluate(
            MAIN,
            &format!("{main}redirect \"x@gmail.com\";"),
            &mut lookup(&scripts),
        );
        assert_eq!(got.problems[0].1.message, "more than 255 included scripts");
        assert!(got.deliveries.is_empty());
    }

    #[test]
    fn global_and_unreadable_includes() {
        let got = evaluate(MAIN, "include :global \"spam\"; keep;", &mut lookup(&[]));
        assert_eq!(got.problems.len(), 1);
        assert!(got.problems[0].1.message.contains("not read"));
        assert_eq!(got.unsure, None, "IT's own scripts are no user's forward");
        let mut huge = |name: &str| Source::Unreadable {
            file: format!("/home/anna/sieve/{name}.sieve"),
            message: "larger than 16777216 bytes (20000000 bytes); not read".to_string(),
            may_forward: true,
        };
        let got = evaluate(MAIN, "include \"stor\";", &mut huge);
        let (file, _) = got.unsure.unwrap();
        assert_eq!(file, "/home/anna/sieve/stor.sieve");
    }

    #[test]
    fn repeated_includes_stay_bounded() {
        // Each level includes the next ten times: 10^9 paths if walked naively.
        let scripts: Vec<(String, String)> = (0..9)
            .map(|i| {
                (
                    format!("s{i}"),
                    format!("include \"s{}\";\n", i + 1).repeat(10),
                )
            })
            .chain([("s9".to_string(), "redirect \"x@gmail.com\";".to_string())])
            .collect();
        let scripts: Vec<(&str, &str)> = scripts
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let got = evaluate(MAIN, "include \"s0\";", &mut lookup(&scripts));
        assert_eq!(got.deliveries[0].target, "x@gmail.com");
        assert!(
            got.unsure.is_some(),
            "too much to follow is said, not guessed"
        );
    }

    #[test]
    fn a_program_with_no_name_is_a_pipe_with_a_problem_never_a_silent_empty_target() {
        // Found by the fuzzer (a `pipe` whose arguments a comment swallowed): every delivery
        // names a target or says why it cannot.
        for script in [
            "require \"vnd.dovecot.pipe\";\npipe \"\";\n",
            "require [\"variables\", \"vnd.dovecot.pipe\"];\npipe \"${x}\";\n",
            "pipe#al [\"user\", \"domain\";\nglobal \"result\";\n",
        ] {
            let got = evaluate("s.sieve", script, &mut |_| Source::Missing {
                file: "x".into(),
            });
            assert_eq!(got.deliveries.len(), 1, "{script}");
            let d = &got.deliveries[0];
            assert_eq!(d.kind, ForwardKind::Pipe, "{script}");
            assert!(
                d.target.is_empty() && d.problem.contains("no program"),
                "{script}: {d:?}"
            );
        }
    }
}
