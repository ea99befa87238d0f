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

#[cfg(test)]
mod tests {
    use super::*;

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
