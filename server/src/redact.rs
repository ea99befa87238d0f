//! Secrets kept out of the logs and error messages. Webhook URLs often carry their secret in
//! the path or the query (`https://hooks.example.org/services/T0/B0/XXXX?token=…`) and an SMTP
//! URL may carry `user:password@`: wherever such a URL is shown, only its scheme, host and
//! port are.

/// `url` with everything but the scheme, host and port left out: `https://h.example:8443/…`.
/// Text that is not a URL at all is shown as `(a URL that does not parse)`, since it may still
/// be a secret pasted in the wrong place.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a URL that does not parse)".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Userinfo ends at the last '@' of the authority.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let more = if end < rest.len() || host.len() < authority.len() {
        "/…"
    } else {
        ""
    };
    format!("{scheme}://{host}{more}")
}

/// The same for an optional URL, for `Debug` output.
pub fn opt_url(u: &Option<String>) -> Option<String> {
    u.as_deref().map(url)
}

/// The same for a list.
pub fn urls(us: &[String]) -> Vec<String> {
    us.iter().map(|u| url(u)).collect()
}

/// `text` (an error message that may quote a config line) with every URL in it shown as
/// [`url`] shows it: a password, token or secret path quoted from a bad line never reaches a
/// log or a terminal. A URL runs from its scheme to the next space or quote.
pub fn urls_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: the letters, digits, '+', '-' and '.' just before "://".
        // The character before the scheme may be several bytes long (a quoted line is any
        // text), so the scheme starts after that character, not one byte after its start.
        let start = rest[..at]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        if start == at {
            // "://" with no scheme: not a URL, keep it as it is.
            out.push_str(&rest[at..end]);
        } else {
            out.push_str(&url(&rest[start..end]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_quoted_in_a_message_lose_their_secrets() {
        let msg = "TOML parse error at line 6, column 9\n  |\n6 | store = \"mysql://vakt:hunter2@db.example.org:5432/vakt\"\n  |         ^^^\nnot a PostgreSQL URL";
        let shown = urls_in_text(msg);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("store = \"mysql://db.example.org:5432/…\""),
            "{shown}"
        );
        assert!(shown.starts_with("TOML parse error at line 6"), "{shown}");
        assert!(shown.ends_with("not a PostgreSQL URL"), "{shown}");
        let hook = urls_in_text(
            "webhook = 'https://hooks.example.org/services/T0/B0/XXXX' and smtp://u:p@m:25",
        );
        assert_eq!(
            hook,
            "webhook = 'https://hooks.example.org/…' and smtp://m:25/…"
        );
        assert_eq!(urls_in_text("no url here"), "no url here");
        assert_eq!(urls_in_text("odd :// text"), "odd :// text");
        // A scheme right after a character of several bytes (the fuzzer's find: this sliced
        // inside 'é' and panicked).
        assert_eq!(urls_in_text("xé://u:p@h/x"), "xé://u:p@h/x");
        assert_eq!(urls_in_text("é€smtp://u:p@h:25"), "é€smtp://h:25/…");
    }

    #[test]
    fn only_scheme_host_and_port_are_shown() {
        assert_eq!(
            url("https://hooks.example.org/services/T0/B0/XXXX?token=s3cret"),
            "https://hooks.example.org/…"
        );
        assert_eq!(
            url("smtp://it:hunter2@relay.example:587"),
            "smtp://relay.example:587/…"
        );
        assert_eq!(url("smtps://relay.example"), "smtps://relay.example");
        assert_eq!(url("http://[::1]:9?k=v"), "http://[::1]:9/…");
        assert_eq!(url("hunter2"), "(a URL that does not parse)");
        assert_eq!(url("smtp://a@b@relay?x"), "smtp://relay/…");
    }
}
