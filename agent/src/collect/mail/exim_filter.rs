//! Exim filter files: a `~/.forward` whose first line is `# Exim filter` (Exim's "Exim's
//! interfaces to mail filtering", chapter 3), read for every place it can send mail.
//!
//! The grammar as Exim reads it: commands are keywords and data values separated by blanks or
//! line breaks, with no terminator; `#` after a separator starts a comment to the end of the
//! line; a value is a word without blanks (and, inside a condition, without parentheses) or a
//! double-quoted string with `\n`, `\r`, `\t`, octal `\ooo`, hex `\xhh` and `\c` escapes, a
//! backslash at the end of a line continuing it. Commands, each possibly after `seen`, `unseen`
//! or `noerror`:
//!
//! ```text
//! deliver <address> [errors_to <address>]     pipe <command>       save <file> [<mode>]
//! mail|vacation [to|cc|bcc|from|reply_to|subject|extra_headers|text|file|log|once
//!                |once_repeat <value>] [expand file <value>] [return message]
//! logfile <file> [<mode>]   logwrite <text>   testprint <text>   add <n> to <var>
//! headers charset|add|remove <value>          fail|freeze [text <value>]   finish
//! if <condition> then <commands> [elif <condition> then <commands>]... [else <commands>] endif
//! ```
//!
//! Conditions: `and` binds tighter than `or`, `not`, parentheses, `delivered`,
//! `error_message`, `first_delivery`, `manually_thawed`, `personal [alias <address>]...`,
//! `foranyaddress <string> (<condition>)`, and `<text> begins|ends|is|contains|matches|is
//! above|is below <text>` with `does not ...`/`is not ...` forms (upper case meaning case
//! matters).
//!
//! What is reported: `deliver` (kind `dot-forward`; `unseen`, or a `save` or a delivery to the
//! owner's own name in the same block, keeps a copy; a delivery to the owner alone is the
//! mailbox and not reported), `pipe` (kind `pipe`), `save` (kind `file`, a relative name under
//! `$home`), and `mail`/`vacation` to fixed recipients when the message goes along (`return
//! message`) or its content does (`$message_body`, `$h_subject:`, ...). Every path is
//! followed, with its conditions in the rule's text; `finish` ends the paths through it.
//! Values are expanded for `$home` and `$local_part`; anything else that depends on the
//! message is kept as written and said in the delivery's problem.
//!
//! Exim parses the whole file before it runs any of it, so a file with a syntax error
//! delivers nothing: the reader reports the problems and, if the file mentions a delivery,
//! that it may forward.

use super::rules::{Delivery, MAX_CONDITION_CHARS, Reading, mentions_any};
use super::text::{Problem, split_addresses, truncate_chars};
use vakt_proto::model::ForwardKind;

/// Exim's limit on a data value before expansion.
const MAX_VALUE_CHARS: usize = 1024;
/// Nesting of `if` and of parentheses beyond which a file is refused; real filters nest a few.
const MAX_DEPTH: usize = 64;
/// Words whose presence in a file the reader could not parse means it may forward.
const FORWARD_WORDS: &[&str] = &["deliver", "pipe", "mail", "vacation"];
/// Variables whose `mail` text carries the message itself.
const MESSAGE_VARIABLES: &[&str] = &[
    "$message_body",
    "$message_headers",
    "$h_",
    "$header_",
    "$rh_",
    "$rheader_",
    "$bh_",
    "$bheader_",
    "${",
];

/// A data value as written: its text after quote processing, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    text: String,
    quoted: bool,
    line: usize,
}

impl Item {
    /// Whether this is the bare keyword `word` (any case).
    fn is(&self, word: &str) -> bool {
        !self.quoted && self.text.eq_ignore_ascii_case(word)
    }

    /// As source text, for a rule's description.
    fn render(&self) -> String {
        if self.quoted {
            format!("{:?}", self.text)
        } else {
            self.text.clone()
        }
    }
}

/// One command of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Deliver {
        to: String,
        unseen: bool,
        line: usize,
    },
    Save {
        file: String,
        unseen: bool,
        line: usize,
    },
    Pipe {
        command: String,
        unseen: bool,
        line: usize,
    },
    /// `mail` or `vacation` to fixed recipients, and whether the message goes along.
    Mail {
        recipients: Vec<String>,
        carries_message: bool,
        line: usize,
    },
    Finish,
    /// `if`: each arm's condition (as text) and commands, `else` as a last arm without one.
    If {
        arms: Vec<(Option<String>, Vec<Command>)>,
    },
    /// Anything that sends nothing: logging, `add`, `headers`, ...
    Other,
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.text[self.pos..].chars().next()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips blanks, line breaks and comments (a `#` here always follows a separator).
    fn skip(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.bump();
                }
                b'#' => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => break,
            }
        }
    }

    /// The next data value; in a condition, `(` and `)` are values of their own and end a word.
    fn item(&mut self, in_condition: bool) -> Result<Option<Item>, Problem> {
        self.skip();
        let line = self.line;
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        if in_condition && (c == b'(' || c == b')') {
            self.bump();
            let text = char::from(c).to_string();
            return Ok(Some(Item {
                text,
                quoted: false,
                line,
            }));
        }
        let mut text = String::new();
        let quoted = c == b'"';
        if quoted {
            self.bump();
            loop {
                match self.bump() {
                    None => return Err(Problem::new(line, "unterminated quoted string")),
                    Some('"') => break,
                    Some('\\') => self.escape(&mut text),
                    Some(c) => text.push(c),
                }
            }
        } else {
            while let Some(c) = self.peek() {
                let ends = matches!(c, b' ' | b'\t' | b'\r' | b'\n')
                    || (in_condition && (c == b'(' || c == b')'));
                if ends {
                    break;
                }
                if let Some(c) = self.bump() {
                    text.push(c);
                }
            }
        }
        if text.chars().count() > MAX_VALUE_CHARS {
            return Err(Problem::new(
                line,
                format!("a value longer than {MAX_VALUE_CHARS} characters"),
            ));
        }
        Ok(Some(Item { text, quoted, line }))
    }

    /// A backslash escape inside quotes, after the backslash.
    fn escape(&mut self, out: &mut String) {
        let digits = |p: &mut Self, radix: u32, max: usize| {
            let mut v = 0u32;
            let mut n = 0;
            while n < max
                && let Some(d) = p.peek().and_then(|c| char::from(c).to_digit(radix))
            {
                v = v * radix + d;
                p.pos += 1;
                n += 1;
            }
            (n > 0).then(|| char::from_u32(v).unwrap_or('?'))
        };
        match self.peek() {
            Some(b'n') => {
                self.pos += 1;
                out.push('\n');
            }
            Some(b'r') => {
                self.pos += 1;
                out.push('\r');
            }
            Some(b't') => {
                self.pos += 1;
                out.push('\t');
            }
            Some(b'x') => {
                self.pos += 1;
                out.extend(digits(self, 16, 2));
            }
            Some(b'0'..=b'7') => out.extend(digits(self, 8, 3)),
            // A line break after a backslash continues the string; the next line's leading
            // blanks are dropped.
            Some(b'\r' | b'\n') => {
                if self.peek() == Some(b'\r') {
                    self.pos += 1;
                }
                if self.peek() == Some(b'\n') {
                    self.bump();
                }
                while matches!(self.peek(), Some(b' ' | b'\t')) {
                    self.pos += 1;
                }
            }
            Some(_) => out.extend(self.bump()),
            None => {}
        }
    }

    fn peek_item(&mut self, in_condition: bool) -> Result<Option<Item>, Problem> {
        let (pos, line) = (self.pos, self.line);
        let item = self.item(in_condition);
        self.pos = pos;
        self.line = line;
        item
    }

    /// The value after a keyword.
    fn value(&mut self, after: &str) -> Result<Item, Problem> {
        let line = self.line;
        self.item(false)?.ok_or_else(|| {
            Problem::new(line, format!("'{after}' needs a value: the file ends here"))
        })
    }

    fn expect(&mut self, word: &str, in_condition: bool) -> Result<Item, Problem> {
        let line = self.line;
        match self.item(in_condition)? {
            Some(i) if i.is(word) => Ok(i),
            Some(i) => Err(Problem::new(
                i.line,
                format!("expected '{word}', found {}", i.render()),
            )),
            None => Err(Problem::new(
                line,
                format!("expected '{word}': the file ends here"),
            )),
        }
    }

    /// Commands up to one of `ends` (not consumed) or the end of the file.
    fn commands(&mut self, ends: &[&str], depth: usize) -> Result<Vec<Command>, Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::new(self.line, "'if' nested too deeply"));
        }
        let mut out = Vec::new();
        loop {
            let Some(next) = self.peek_item(false)? else {
                return match ends.last() {
                    Some(end) => Err(Problem::new(
                        self.line,
                        format!("missing '{end}': the file ends here"),
                    )),
                    None => Ok(out),
                };
            };
            if ends.iter().any(|e| next.is(e)) {
                return Ok(out);
            }
            out.push(self.command(depth)?);
        }
    }

    fn command(&mut self, depth: usize) -> Result<Command, Problem> {
        let mut word = self.value("a command")?;
        let mut unseen = false;
        while ["seen", "unseen", "noerror"].iter().any(|p| word.is(p)) {
            unseen |= word.is("unseen");
            let after = word.text.to_ascii_lowercase();
            word = self.value(&after)?;
        }
        let line = word.line;
        let name = if word.quoted {
            String::new()
        } else {
            word.text.to_ascii_lowercase()
        };
        Ok(match name.as_str() {
            "deliver" => {
                let to = self.value("deliver")?.text;
                if self.peek_item(false)?.is_some_and(|i| i.is("errors_to")) {
                    self.item(false)?;
                    self.value("errors_to")?;
                }
                Command::Deliver { to, unseen, line }
            }
            "save" => {
                let file = self.value("save")?.text;
                self.optional_mode()?;
                Command::Save { file, unseen, line }
            }
            "logfile" => {
                self.value("logfile")?;
                self.optional_mode()?;
                Command::Other
            }
            "pipe" => Command::Pipe {
                command: self.value("pipe")?.text,
                unseen,
                line,
            },
            "logwrite" | "testprint" => {
                self.value(&name)?;
                Command::Other
            }
            "add" => {
                self.value("add")?;
                self.expect("to", false)?;
                self.value("to")?;
                Command::Other
            }
            "headers" => {
                let what = self.value("headers")?;
                if !["charset", "add", "remove"].iter().any(|w| what.is(w)) {
                    return Err(Problem::new(
                        what.line,
                        format!("'headers {}' not understood", what.render()),
                    ));
                }
                self.value("headers")?;
                Command::Other
            }
            "fail" | "freeze" => {
                if self.peek_item(false)?.is_some_and(|i| i.is("text")) {
                    self.item(false)?;
                    self.value("text")?;
                }
                Command::Other
            }
            "finish" => Command::Finish,
            "mail" | "vacation" => self.mail(line)?,
            "if" => self.conditional(depth)?,
            _ => {
                return Err(Problem::new(
                    line,
                    format!("'{}' is not a filter command", word.render()),
                ));
            }
        })
    }

    fn optional_mode(&mut self) -> Result<(), Problem> {
        if self
            .peek_item(false)?
            .is_some_and(|i| !i.text.is_empty() && i.text.chars().all(|c| c.is_ascii_digit()))
        {
            self.item(false)?;
        }
        Ok(())
    }

    fn mail(&mut self, line: usize) -> Result<Command, Problem> {
        const OPTIONS: &[&str] = &[
            "to",
            "cc",
            "bcc",
            "from",
            "reply_to",
            "subject",
            "extra_headers",
            "text",
            "file",
            "log",
            "once",
            "once_repeat",
        ];
        let mut recipients = Vec::new();
        let mut carries_message = false;
        while let Some(next) = self.peek_item(false)? {
            if next.is("expand") {
                self.item(false)?;
                self.expect("file", false)?;
                self.value("file")?;
            } else if next.is("return") {
                self.item(false)?;
                self.expect("message", false)?;
                carries_message = true;
            } else if let Some(option) = OPTIONS.iter().find(|o| next.is(o)) {
                self.item(false)?;
                let value = self.value(option)?.text;
                match *option {
                    "to" | "cc" | "bcc" => recipients.extend(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|r| !r.is_empty())
                            .map(str::to_string),
                    ),
                    "subject" | "text" | "extra_headers" => {
                        let lower = value.to_ascii_lowercase();
                        carries_message |= MESSAGE_VARIABLES.iter().any(|v| lower.contains(v));
                    }
                    _ => {}
                }
            } else {
                break;
            }
        }
        Ok(Command::Mail {
            recipients,
            carries_message,
            line,
        })
    }

    fn conditional(&mut self, depth: usize) -> Result<Command, Problem> {
        let mut arms = Vec::new();
        loop {
            let mut text = Vec::new();
            self.condition(&mut text, depth)?;
            self.expect("then", false)?;
            let body = self.commands(&["elif", "else", "endif"], depth + 1)?;
            arms.push((Some(text.join(" ")), body));
            let end = self.value("if")?;
            if end.is("elif") {
                continue;
            }
            if end.is("else") {
                let body = self.commands(&["endif"], depth + 1)?;
                arms.push((None, body));
                self.expect("endif", false)?;
            }
            return Ok(Command::If { arms });
        }
    }

    fn condition(&mut self, text: &mut Vec<String>, depth: usize) -> Result<(), Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::new(self.line, "condition nested too deeply"));
        }
        self.conjunction(text, depth)?;
        while self.take("or", text)? {
            self.conjunction(text, depth)?;
        }
        Ok(())
    }

    fn conjunction(&mut self, text: &mut Vec<String>, depth: usize) -> Result<(), Problem> {
        self.negation(text, depth)?;
        while self.take("and", text)? {
            self.negation(text, depth)?;
        }
        Ok(())
    }

    /// Takes the keyword `word` if it comes next in a condition, adding it to `text`.
    fn take(&mut self, word: &str, text: &mut Vec<String>) -> Result<bool, Problem> {
        let next = self.peek_item(true)?.is_some_and(|i| i.is(word));
        if next {
            self.item(true)?;
            text.push(word.to_string());
        }
        Ok(next)
    }

    fn negation(&mut self, text: &mut Vec<String>, depth: usize) -> Result<(), Problem> {
        let mut nots = 0;
        while self.take("not", text)? {
            nots += 1;
            if nots > MAX_DEPTH {
                return Err(Problem::new(self.line, "condition nested too deeply"));
            }
        }
        self.primary(text, depth)
    }

    fn cond_item(&mut self) -> Result<Item, Problem> {
        let line = self.line;
        self.item(true)?
            .ok_or_else(|| Problem::new(line, "the condition is cut off: the file ends here"))
    }

    fn primary(&mut self, text: &mut Vec<String>, depth: usize) -> Result<(), Problem> {
        let first = self.cond_item()?;
        text.push(first.render());
        if first.is("(") {
            self.condition(text, depth + 1)?;
            return self.close(text);
        }
        if [
            "delivered",
            "error_message",
            "first_delivery",
            "manually_thawed",
        ]
        .iter()
        .any(|w| first.is(w))
        {
            return Ok(());
        }
        if first.is("personal") {
            while self.peek_item(true)?.is_some_and(|i| i.is("alias")) {
                self.item(true)?;
                let alias = self.cond_item()?;
                text.push(format!("alias {}", alias.render()));
            }
            return Ok(());
        }
        if first.is("foranyaddress") {
            let list = self.cond_item()?;
            text.push(list.render());
            let open = self.cond_item()?;
            if !open.is("(") {
                return Err(Problem::new(
                    open.line,
                    "'foranyaddress' needs its condition in parentheses",
                ));
            }
            text.push("(".to_string());
            self.condition(text, depth + 1)?;
            return self.close(text);
        }
        // <text> <test> <text>
        let op = self.cond_item()?;
        let lower = op.text.to_ascii_lowercase();
        let known = |w: &str| ["begins", "ends", "is", "contains", "matches"].contains(&w);
        if op.quoted || !(known(&lower) || lower == "does") {
            return Err(Problem::new(
                op.line,
                format!("'{}' is not a condition", op.render()),
            ));
        }
        text.push(op.text.clone());
        if lower == "does" {
            self.expect("not", true)?;
            let verb = self.cond_item()?;
            if !["begin", "end", "contain", "match"]
                .iter()
                .any(|w| verb.is(w))
            {
                return Err(Problem::new(
                    verb.line,
                    format!("'does not {}' is not a condition", verb.render()),
                ));
            }
            text.push(format!("not {}", verb.text));
        } else if lower == "is" {
            self.take("not", text)?;
            if let Some(w) = self
                .peek_item(true)?
                .filter(|i| i.is("above") || i.is("below"))
            {
                self.item(true)?;
                text.push(w.text);
            }
        }
        let right = self.cond_item()?;
        text.push(right.render());
        Ok(())
    }

    fn close(&mut self, text: &mut Vec<String>) -> Result<(), Problem> {
        let close = self.cond_item()?;
        if !close.is(")") {
            return Err(Problem::new(
                close.line,
                format!("expected ')', found {}", close.render()),
            ));
        }
        text.push(")".to_string());
        Ok(())
    }
}

/// Parses an Exim filter (its first line is a comment like every `#` line).
pub fn parse_filter(text: &str) -> Result<Vec<Command>, Problem> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
    };
    p.commands(&[], 0)
}

/// A value after Exim's expansion, as far as it is known here: `$home`, `$local_part` (and
/// `$original_local_part`) are the owner's; `\N...\N` is literal and `\x` is `x`; any other
/// variable or expansion item is kept as written and named in the second part.
fn expand(value: &str, owner: &str, home: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(value.len());
    let mut unknown = Vec::new();
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '\\' if rest.starts_with('N') => {
                let body = &rest[1..];
                let end = body.find("\\N").unwrap_or(body.len());
                out.push_str(&body[..end]);
                rest = body.get(end + 2..).unwrap_or_default();
            }
            '\\' => {
                if let Some(n) = rest.chars().next() {
                    out.push(n);
                    rest = &rest[n.len_utf8()..];
                }
            }
            '$' => {
                let (written, name) = if let Some(braced) = rest.strip_prefix('{') {
                    let mut depth = 1;
                    let end = braced
                        .char_indices()
                        .find(|&(_, c)| {
                            match c {
                                '{' => depth += 1,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            depth == 0
                        })
                        .map_or(braced.len(), |(i, _)| i);
                    let written = &rest[..(end + 2).min(rest.len())];
                    (written, &braced[..end])
                } else {
                    let lower = rest.to_ascii_lowercase();
                    let header = ["h_", "header_", "rh_", "rheader_", "bh_", "bheader_"]
                        .iter()
                        .any(|p| lower.starts_with(p));
                    let end = if header {
                        rest.find(|c: char| c == ':' || c.is_whitespace())
                            .map_or(rest.len(), |i| {
                                if rest[i..].starts_with(':') { i + 1 } else { i }
                            })
                    } else {
                        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .unwrap_or(rest.len())
                    };
                    (&rest[..end], &rest[..end])
                };
                rest = &rest[written.len()..];
                match name.to_ascii_lowercase().as_str() {
                    "home" => out.push_str(home),
                    "local_part" | "original_local_part" => out.push_str(owner),
                    _ => {
                        let written = format!("${written}");
                        out.push_str(&written);
                        unknown.push(written);
                    }
                }
            }
            c => out.push(c),
        }
    }
    (out, unknown)
}

struct Walk<'a> {
    file: &'a str,
    owner: &'a str,
    home: &'a str,
    out: Vec<Delivery>,
}

impl Walk<'_> {
    /// Follows `commands` on a path that is live; whether any path goes on after them.
    fn block(&mut self, commands: &[Command], conditions: &mut Vec<String>) -> bool {
        // A copy stays when the same block also delivers to the owner's mailbox or, for what
        // goes elsewhere, saves one.
        let to_owner = commands
            .iter()
            .any(|c| matches!(c, Command::Deliver { to, .. } if self.is_owner(to)));
        let keeps_here = to_owner || commands.iter().any(|c| matches!(c, Command::Save { .. }));
        for c in commands {
            match c {
                Command::Finish => return false,
                Command::If { arms } => {
                    let mut goes_on = arms.last().is_none_or(|(cond, _)| cond.is_some());
                    for (i, (cond, body)) in arms.iter().enumerate() {
                        let head = match cond {
                            Some(c) if i == 0 => format!("if {c}"),
                            Some(c) => format!("elif {c}"),
                            None => "else".to_string(),
                        };
                        conditions.push(truncate_chars(&head, MAX_CONDITION_CHARS));
                        goes_on |= self.block(body, conditions);
                        conditions.pop();
                    }
                    if !goes_on {
                        return false;
                    }
                }
                Command::Deliver { to, unseen, line } => {
                    if self.is_owner(to) {
                        continue;
                    }
                    let (value, unknown) = expand(to, self.owner, self.home);
                    for address in split_addresses(&value) {
                        self.push(
                            address,
                            ForwardKind::DotForward,
                            *unseen || keeps_here,
                            conditions,
                            *line,
                            &unknown,
                        );
                    }
                }
                Command::Pipe {
                    command,
                    unseen,
                    line,
                } => {
                    let (value, unknown) = expand(command, self.owner, self.home);
                    let target = format!("|{}", value.trim());
                    self.push(
                        target,
                        ForwardKind::Pipe,
                        *unseen || keeps_here,
                        conditions,
                        *line,
                        &unknown,
                    );
                }
                Command::Save { file, unseen, line } => {
                    let (value, unknown) = expand(file, self.owner, self.home);
                    let target = if value.starts_with('/') {
                        value
                    } else {
                        format!("{}/{value}", self.home.trim_end_matches('/'))
                    };
                    let keeps = *unseen || to_owner;
                    self.push(
                        target,
                        ForwardKind::File,
                        keeps,
                        conditions,
                        *line,
                        &unknown,
                    );
                }
                Command::Mail {
                    recipients,
                    carries_message,
                    line,
                } => {
                    if !carries_message {
                        continue;
                    }
                    for r in recipients {
                        let (value, unknown) = expand(r, self.owner, self.home);
                        // A reply to whoever sent it ($reply_address) is no forward.
                        if value.trim() == unknown.concat() {
                            continue;
                        }
                        for address in split_addresses(&value) {
                            self.push(
                                address,
                                ForwardKind::DotForward,
                                true,
                                conditions,
                                *line,
                                &unknown,
                            );
                        }
                    }
                }
                Command::Other => {}
            }
        }
        true
    }

    fn is_owner(&self, to: &str) -> bool {
        let (value, _) = expand(to, self.owner, self.home);
        value.trim() == self.owner || value.trim() == format!("\\{}", self.owner)
    }

    fn push(
        &mut self,
        target: String,
        kind: ForwardKind,
        keeps_copy: bool,
        conditions: &[String],
        line: usize,
        unknown: &[String],
    ) {
        let problem = if unknown.is_empty() {
            String::new()
        } else {
            format!("the target is not known here: {}", unknown.join(", "))
        };
        self.out.push(Delivery {
            file: self.file.to_string(),
            target,
            kind,
            keeps_copy,
            conditions: conditions.to_vec(),
            line,
            problem,
        });
    }
}

/// Reads an Exim filter of `owner` (home `home`) at device path `file`.
pub fn read(file: &str, text: &str, owner: &str, home: &str) -> Reading {
    let mut out = Reading::default();
    match parse_filter(text) {
        Ok(commands) => {
            let mut walk = Walk {
                file,
                owner,
                home,
                out: Vec::new(),
            };
            walk.block(&commands, &mut Vec::new());
            out.deliveries = walk.out;
        }
        Err(p) => {
            out.problem(file, p.clone());
            if mentions_any(text, FORWARD_WORDS) {
                out.unsure = Some((file.to_string(), p));
            }
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(text: &str) -> Vec<(String, ForwardKind, bool, String, String)> {
        let r = read("/home/anna/.forward", text, "anna", "/home/anna");
        assert_eq!(r.problems, vec![], "{text}");
        r.deliveries
            .into_iter()
            .map(|d| {
                (
                    d.target,
                    d.kind,
                    d.keeps_copy,
                    d.conditions.join(" / "),
                    d.problem,
                )
            })
            .collect()
    }

    fn one(
        t: &str,
        k: ForwardKind,
        keeps: bool,
        c: &str,
    ) -> (String, ForwardKind, bool, String, String) {
        (t.into(), k, keeps, c.into(), String::new())
    }

    #[test]
    fn deliveries_with_their_conditions() {
        use ForwardKind::*;
        let got = summary(
            "# Exim filter\n\
             if error_message then finish endif\n\
             if $h_subject: contains \"faktura\" or\n  ($h_from: matches ^chef@ and not personal)\n\
             then\n  unseen deliver \"Anna B <anna.b@gmail.com>\" errors_to anna@sorsele.se\n\
             elif $local_part_suffix is \"-arkiv\" then\n  save mail/arkiv 0640\n  deliver anna\n\
             else\n  pipe \"$home/bin/sortera $local_part\"\nendif\n",
        );
        assert_eq!(
            got,
            vec![
                one(
                    "anna.b@gmail.com",
                    DotForward,
                    true,
                    "if $h_subject: contains \"faktura\" or ( $h_from: matches ^chef@ and not personal )"
                ),
                one(
                    "/home/anna/mail/arkiv",
                    File,
                    true,
                    "elif $local_part_suffix is \"-arkiv\""
                ),
                one("|/home/anna/bin/sortera anna", Pipe, false, "else"),
            ]
        );
    }

    #[test]
    fn finish_ends_the_paths_through_it() {
        use ForwardKind::*;
        assert_eq!(
            summary("# Exim filter\nfinish\ndeliver x@gmail.com\n"),
            vec![]
        );
        assert_eq!(
            summary(
                "# Exim filter\nif personal then seen finish else finish endif\ndeliver x@gmail.com"
            ),
            vec![]
        );
        assert_eq!(
            summary("# Exim filter\nif personal then finish endif\ndeliver x@gmail.com"),
            vec![one("x@gmail.com", DotForward, false, "")]
        );
    }

    #[test]
    fn mail_is_a_forward_only_when_the_message_goes_along() {
        use ForwardKind::*;
        assert_eq!(
            summary(
                "# Exim filter\n\
                 if personal then vacation endif\n\
                 mail to $reply_address subject \"Borta\" text \"Jag är borta\"\n\
                 mail to chef@sorsele.se subject \"Nytt brev\"\n\
                 mail to \"x@gmail.com, Y <y@outlook.com>\" subject \"Fwd: $h_subject:\"\n\
                 seen mail bcc z@proton.me return message\n"
            ),
            vec![
                one("x@gmail.com", DotForward, true, ""),
                one("y@outlook.com", DotForward, true, ""),
                one("z@proton.me", DotForward, true, ""),
            ]
        );
    }

    #[test]
    fn expansions_known_and_unknown() {
        assert_eq!(
            expand("$local_part@gmail.com", "anna", "/h"),
            ("anna@gmail.com".into(), vec![])
        );
        assert_eq!(
            expand("${local_part}-x@gmail.com", "anna", "/h"),
            ("anna-x@gmail.com".into(), vec![])
        );
        assert_eq!(
            expand("\\N$$\\N\\$x", "anna", "/h"),
            ("$$$x".into(), vec![])
        );
        assert_eq!(
            expand("$h_reply-to: x", "anna", "/h"),
            ("$h_reply-to: x".into(), vec!["$h_reply-to:".to_string()])
        );
        assert_eq!(
            expand("${lookup{$local_part}lsearch{/etc/fwd}}", "anna", "/h"),
            (
                "${lookup{$local_part}lsearch{/etc/fwd}}".into(),
                vec!["${lookup{$local_part}lsearch{/etc/fwd}}".to_string()]
            )
        );
        let got = summary("# Exim filter\ndeliver $h_x-forward-to:\ndeliver $1@gmail.com\n");
        assert_eq!(got[0].4, "the target is not known here: $h_x-forward-to:");
        assert_eq!(got[1].0, "$1@gmail.com");
    }

    #[test]
    fn quoted_values_and_escapes() {
        let got = summary(
            "# Exim filter\ndeliver \"x\\x40gmail.com\"\ndeliver \"y\\100out\\\n     look.com\"\n",
        );
        let t: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(t, vec!["x@gmail.com", "y@outlook.com"]);
    }

    #[test]
    fn errors_refuse_the_whole_file() {
        for (text, line, message) in [
            (
                "# Exim filter\ndeliver x@gmail.com\nforward y@gmail.com\n",
                3,
                "'forward' is not a filter command",
            ),
            (
                "# Exim filter\nif $h_to: contains x then\ndeliver x@gmail.com\n",
                3,
                "missing 'endif': the file ends here",
            ),
            (
                "# Exim filter\nif $h_to: resembles x then deliver x@gmail.com endif",
                2,
                "'resembles' is not a condition",
            ),
            (
                "# Exim filter\ndeliver \"x@gmail.com\n",
                2,
                "unterminated quoted string",
            ),
            (
                "# Exim filter\ndeliver",
                2,
                "'deliver' needs a value: the file ends here",
            ),
        ] {
            let got = read("f", text, "anna", "/home/anna");
            assert!(got.deliveries.is_empty(), "{text}");
            assert_eq!(
                got.problems,
                vec![("f".to_string(), Problem::new(line, message))],
                "{text}"
            );
            assert!(got.unsure.is_some(), "{text}");
        }
        let got = read("f", "# Exim filter\nlogwrite\n", "anna", "/home/anna");
        assert_eq!(got.unsure, None, "nothing in it delivers");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!(
            "# Exim filter\n{}deliver x@gmail.com{}",
            "if personal then ".repeat(100_000),
            " endif".repeat(100_000)
        );
        assert_eq!(read("f", &text, "a", "/h").problems.len(), 1);
        let text = format!(
            "# Exim filter\nif {}personal{} then finish endif",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert_eq!(read("f", &text, "a", "/h").problems.len(), 1);
        let text = format!(
            "# Exim filter\nif {}personal then finish endif",
            "not ".repeat(100_000)
        );
        assert_eq!(read("f", &text, "a", "/h").problems.len(), 1);
    }
}
