//! Small text helpers shared by the mail readers: signature clean-up (HTML to text, length
//! limit), the bare address inside `Name <addr>`, and line numbering of problems.

/// Signatures are reported so the server can check that they name the organisation; the first
/// 1,000 characters are plenty for that and keep a pasted novel out of every report.
pub const MAX_SIGNATURE_CHARS: usize = 1000;

/// A problem found in one file, with the line it is on (0 when no line applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

impl Problem {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

/// What a reader made of one file, and what it found wrong on the way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed<T> {
    pub value: T,
    pub problems: Vec<Problem>,
}

/// Cleans a signature for the report: HTML reduced to its text when `html`, line ends unified,
/// trailing spaces and runs of blank lines dropped, then cut to [`MAX_SIGNATURE_CHARS`].
pub fn clean_signature(raw: &str, html: bool) -> String {
    let text = if html {
        html_to_text(raw)
    } else {
        raw.replace("\r\n", "\n").replace('\r', "\n")
    };
    let mut out = String::new();
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    truncate_chars(&out, MAX_SIGNATURE_CHARS)
}

/// The first `max` characters of `s` (never splitting a character).
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Elements after which a mail client's rendering starts a new line.
const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "tr",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "blockquote",
    "pre",
    "hr",
];

/// The visible text of an HTML fragment: tags removed, block elements and `<br>` as line
/// breaks, `<style>`/`<script>`/`<head>` content dropped, entities decoded. Not an HTML parser;
/// enough to read what a signature says.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    while !rest.is_empty() {
        if let Some(lt) = rest.find('<') {
            if skip_until.is_none() {
                push_text(&mut out, &rest[..lt]);
            }
            let after = &rest[lt + 1..];
            if let Some(body) = after.strip_prefix("!--") {
                rest = match body.find("-->") {
                    Some(end) => &body[end + 3..],
                    None => "",
                };
                continue;
            }
            let Some(gt) = after.find('>') else {
                // A `<` that opens no tag is text.
                if skip_until.is_none() {
                    push_text(&mut out, &rest[lt..]);
                }
                break;
            };
            let tag = &after[..gt];
            rest = &after[gt + 1..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if let Some(until) = skip_until {
                if closing && name == until {
                    skip_until = None;
                }
                continue;
            }
            match name.as_str() {
                "style" if !closing => skip_until = Some("style"),
                "script" if !closing => skip_until = Some("script"),
                "head" if !closing => skip_until = Some("head"),
                "br" => out.push('\n'),
                // Adjacent block boundaries make one line break, as they render.
                n if BLOCK_TAGS.contains(&n) && !out.is_empty() && !out.ends_with('\n') => {
                    out.push('\n');
                }
                "td" | "th" if closing => out.push(' '),
                _ => {}
            }
        } else {
            if skip_until.is_none() {
                push_text(&mut out, rest);
            }
            break;
        }
    }
    out
}

/// Appends HTML text: whitespace runs (including source line breaks) become one space, as a
/// browser shows them, and entities are decoded.
fn push_text(out: &mut String, text: &str) {
    let decoded = decode_entities(text);
    let mut last_space = out.ends_with([' ', '\n']) || out.is_empty();
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else {
            out.push(if c == '\u{a0}' { ' ' } else { c });
            last_space = false;
        }
    }
}

/// Decodes character references and the named entities signatures actually contain
/// (the XML five, `nbsp`, and the Nordic and common Latin letters).
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|e| entity(&after[..e]).map(|c| (c, e)));
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        return char::from_u32(code).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "aring" => 'å',
        "Aring" => 'Å',
        "auml" => 'ä',
        "Auml" => 'Ä',
        "ouml" => 'ö',
        "Ouml" => 'Ö',
        "aelig" => 'æ',
        "AElig" => 'Æ',
        "oslash" => 'ø',
        "Oslash" => 'Ø',
        "uuml" => 'ü',
        "Uuml" => 'Ü',
        "eacute" => 'é',
        "Eacute" => 'É',
        "egrave" => 'è',
        "copy" => '©',
        "ndash" => '–',
        "mdash" => '—',
        "bull" => '•',
        "middot" => '·',
        _ => return None,
    })
}

/// Whether text looks like HTML rather than plain text (a signature file without an extension
/// that says so).
pub fn looks_like_html(text: &str) -> bool {
    let t = text.trim_start().to_ascii_lowercase();
    t.starts_with('<')
        && [
            "<br", "<p", "<div", "<html", "<span", "<table", "<b>", "<a ", "<font",
        ]
        .iter()
        .any(|tag| t.contains(tag))
}

/// The address of a recipient as the mail system reads it (RFC 5322): comments `(...)`
/// dropped (nested, with `\\` escapes), the `<...>` of `Name <addr@host>` taken, an obsolete
/// source route (`<@relay:user@host>`) dropped, and the blanks that may surround `.` and `@`
/// removed, so `anna (privat) @ gmail . com` is `anna@gmail.com`. Quoted text is kept as
/// written, and `<` inside quotes or comments opens nothing: the comment of
/// `x@gmail.com (not <a@sorsele.se>)` cannot stand in for the address.
pub fn bare_address(s: &str) -> String {
    let plain = strip_comments(s);
    let spec = angle_content(&plain).unwrap_or(&plain);
    let spec = match spec.trim_start().strip_prefix('@') {
        Some(route) => route.split_once(':').map_or(spec, |(_, rest)| rest),
        None => spec,
    };
    let mut out = String::with_capacity(spec.len());
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            '\\' if quoted => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {}
            c => out.push(c),
        }
    }
    out
}

/// The addresses in one destination: usually one ([`bare_address`]), but blank-separated
/// addresses without quotes or angle brackets (`x@gmail.com a@sorsele.se`, the old sendmail
/// style) are each their own, so an internal one cannot hide an external one behind it.
pub fn split_addresses(s: &str) -> Vec<String> {
    let plain = strip_comments(s);
    if !plain.contains(['<', '"']) {
        let whole = |w: &&str| !w.starts_with('@') && !w.ends_with('@') && w.contains('@');
        let words: Vec<&str> = plain.split_whitespace().filter(whole).collect();
        if words.len() > 1 {
            return words.into_iter().map(bare_address).collect();
        }
    }
    vec![bare_address(s)]
}

/// `s` with its RFC 5322 comments replaced by a blank (outside quoted strings). An unclosed
/// comment runs to the end, as it would for the mail system.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted || depth > 0 => {
                let next = chars.next();
                if depth == 0 {
                    out.push(c);
                    out.extend(next);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => {
                if depth == 0 {
                    out.push(' ');
                }
                depth += 1;
            }
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The text between the last `<` outside quotes and the `>` after it, if there is one.
fn angle_content(s: &str) -> Option<&str> {
    let mut open = None;
    for (i, c, outside) in quoting(s) {
        match c {
            '<' if outside => open = Some(i),
            '>' if outside => {
                if let Some(o) = open {
                    return Some(&s[o + 1..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The characters of `s` with their offsets, each marked whether it stands outside double
/// quotes (the quote marks themselves, and `\\` escapes inside quotes, do not).
pub fn quoting(s: &str) -> impl Iterator<Item = (usize, char, bool)> + '_ {
    let mut quoted = false;
    let mut escaped = false;
    s.char_indices().map(move |(i, c)| {
        let outside = !quoted && !escaped && c != '"';
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
        (i, c, outside)
    })
}

/// Text of a file: UTF-8 (a BOM dropped), invalid bytes replaced rather than failing.
pub fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_signatures_become_text() {
        let html = "<div style=\"x\">Åsa&nbsp;Öberg<br>\r\n<b>Sorsele   kommun</b></div>\
                    <style>p{color:red}</style><p>Tel &#48;70&#x2D;1 &amp; fax</p><!-- c -->";
        assert_eq!(
            clean_signature(html, true),
            "Åsa Öberg\nSorsele kommun\nTel 070-1 & fax"
        );
    }

    #[test]
    fn plain_signatures_keep_their_lines() {
        assert_eq!(
            clean_signature("-- \r\nAnna Berg  \r\n\r\n\r\nSorsele kommun\r\n", false),
            "--\nAnna Berg\n\nSorsele kommun"
        );
    }

    #[test]
    fn long_signatures_are_cut_on_a_character() {
        let long = "ö".repeat(MAX_SIGNATURE_CHARS + 10);
        let got = clean_signature(&long, false);
        assert_eq!(got.chars().count(), MAX_SIGNATURE_CHARS);
    }

    #[test]
    fn broken_html_is_still_text() {
        assert_eq!(html_to_text("a < b &unknown; &amp"), "a < b &unknown; &amp");
        assert_eq!(html_to_text("x<script>bad()"), "x");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            bare_address(" Anna Berg <anna@gmail.com> "),
            "anna@gmail.com"
        );
        assert_eq!(bare_address("anna@gmail.com"), "anna@gmail.com");
        // No `<...>` pair: what is there is the address, blanks removed.
        assert_eq!(bare_address("a > b <"), "a>b<");
    }

    #[test]
    fn addresses_read_as_rfc_5322_does() {
        for (written, read) in [
            ("anna (privat) @ gmail . com", "anna@gmail.com"),
            ("anna@(nested (comment) here)gmail.com", "anna@gmail.com"),
            ("x@gmail.com (not <a@sorsele.se>)", "x@gmail.com"),
            ("\"Berg, Anna <a@sorsele.se>\" <x@gmail.com>", "x@gmail.com"),
            ("\"anna berg\"@gmail.com", "\"anna berg\"@gmail.com"),
            ("<@relay.example:x@gmail.com>", "x@gmail.com"),
            ("Anna\t<\r\n anna @ outlook.com >", "anna@outlook.com"),
            ("a@b.se (unclosed <c@d.se>", "a@b.se"),
        ] {
            assert_eq!(bare_address(written), read, "{written}");
        }
    }

    #[test]
    fn blank_separated_addresses_are_each_their_own() {
        assert_eq!(
            split_addresses("x@gmail.com a@sorsele.se"),
            vec!["x@gmail.com", "a@sorsele.se"]
        );
        assert_eq!(
            split_addresses("anna @ gmail . com"),
            vec!["anna@gmail.com"]
        );
        assert_eq!(
            split_addresses("Anna Berg <anna@gmail.com>"),
            vec!["anna@gmail.com"]
        );
        assert_eq!(
            split_addresses("deliver x@gmail.com"),
            vec!["deliverx@gmail.com"]
        );
        assert_eq!(
            split_addresses("x@gmail.com och a@sorsele.se"),
            vec!["x@gmail.com", "a@sorsele.se"]
        );
    }

    #[test]
    fn problems_name_their_line() {
        assert_eq!(Problem::new(3, "bad").to_string(), "line 3: bad");
        assert_eq!(Problem::new(0, "bad").to_string(), "bad");
    }
}
