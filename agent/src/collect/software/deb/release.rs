//! A repository's `Release`/`InRelease` file: who publishes it (`Origin`, `Label`) and which
//! distribution it is (`Suite`, `Codename`).
//!
//! `InRelease` is the same text inside an OpenPGP clear-signature (RFC 4880 section 7): armour
//! header lines, a blank line, the dash-escaped text, then the signature block. The signature is
//! not checked here (apt already did when it fetched the file); only the text is wanted.

use super::control;

/// The fields of a Release file attribution uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub origin: String,
    pub label: String,
    pub suite: String,
    pub codename: String,
}

/// Why a Release file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("signed message without a blank line after its armour header")]
    NoArmourEnd,
    #[error("signed message without its signature block")]
    NoSignature,
    #[error("no Origin, Label, Suite or Codename{}", first_bad_line.map(|l| format!(" (line {l} is unreadable)")).unwrap_or_default())]
    Empty { first_bad_line: Option<usize> },
}

const BEGIN_SIGNED: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";

/// The signed text of a clear-signed message, or `text` itself when it is not one. Returns the
/// text and the line number (1-based) its first line had in the file.
pub fn strip_clearsign(text: &str) -> Result<(String, usize), ReleaseError> {
    let mut lines = text.lines().enumerate();
    // Leading blank lines are tolerated; anything else before the marker means "not signed".
    let first = lines.by_ref().find(|(_, l)| !l.trim().is_empty());
    match first {
        Some((_, l)) if l.trim_end() == BEGIN_SIGNED => {}
        _ => return Ok((text.to_string(), 1)),
    }
    // Armour headers ("Hash: SHA512") up to the first blank line.
    let (body_start, _) = lines
        .by_ref()
        .find(|(_, l)| l.trim().is_empty())
        .ok_or(ReleaseError::NoArmourEnd)?;
    let mut body = String::with_capacity(text.len());
    for (_, line) in lines {
        if line.trim_end() == BEGIN_SIGNATURE {
            return Ok((body, body_start + 2));
        }
        // Dash-escaped lines ("- -----foo") lose their "- ".
        body.push_str(line.strip_prefix("- ").unwrap_or(line));
        body.push('\n');
    }
    Err(ReleaseError::NoSignature)
}

/// Parses a Release or InRelease file.
pub fn parse_release(text: &str) -> Result<ReleaseInfo, ReleaseError> {
    let (body, first_line) = strip_clearsign(text)?;
    let (paragraphs, bad) = control::parse(&body, false);
    // A stray line costs nothing as long as the fields wanted are there; it is reported only
    // when they are not, as the likely reason.
    let empty = ReleaseError::Empty {
        first_bad_line: bad.first().map(|b| b.line + first_line - 1),
    };
    let Some(p) = paragraphs.first() else {
        return Err(empty);
    };
    let get = |f: &str| p.get(f).unwrap_or("").to_string();
    let info = ReleaseInfo {
        origin: get("Origin"),
        label: get("Label"),
        suite: get("Suite"),
        codename: get("Codename"),
    };
    if info == ReleaseInfo::default() {
        return Err(empty);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str = "\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

Origin: Debian
Label: Debian-Security
Suite: oldstable-security
Version: 12
Codename: bookworm-security
Architectures: amd64 arm64
SHA256:
 0ed6d4c8891eb86358b94bb35d9e4da4 1484 contrib/Contents-all
- -----not really a marker
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEE
=abcd
-----END PGP SIGNATURE-----
";

    #[test]
    fn inrelease_is_unwrapped() {
        let r = parse_release(SIGNED).unwrap();
        assert_eq!(r.origin, "Debian");
        assert_eq!(r.label, "Debian-Security");
        assert_eq!(r.suite, "oldstable-security");
        assert_eq!(r.codename, "bookworm-security");
        let (body, first) = strip_clearsign(SIGNED).unwrap();
        assert_eq!(first, 4);
        assert!(body.ends_with(" 0ed6d4c8891eb86358b94bb35d9e4da4 1484 contrib/Contents-all\n-----not really a marker\n"));
        assert!(!body.contains("Hash: SHA256"));
    }

    #[test]
    fn plain_release_is_read_as_is() {
        let r =
            parse_release("Origin: NodeSource\nLabel: NodeSource\nCodename: nodistro\n").unwrap();
        assert_eq!(r.origin, "NodeSource");
        assert_eq!(r.suite, "");
    }

    #[test]
    fn broken_armour_is_an_error() {
        let no_sig = SIGNED
            .split("-----BEGIN PGP SIGNATURE-----")
            .next()
            .unwrap();
        assert_eq!(parse_release(no_sig), Err(ReleaseError::NoSignature));
        assert_eq!(
            parse_release("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n"),
            Err(ReleaseError::NoArmourEnd)
        );
    }

    #[test]
    fn garbage_is_an_error_with_its_line() {
        let none = ReleaseError::Empty {
            first_bad_line: None,
        };
        assert_eq!(parse_release(""), Err(none.clone()));
        assert_eq!(parse_release("Foo: bar\n"), Err(none));
        // A stray line amid good fields is tolerated.
        let stray = SIGNED.replace("Version: 12", "\u{0}\u{1}binary");
        assert_eq!(parse_release(&stray).unwrap().codename, "bookworm-security");
        // With no field wanted, the first unreadable line is named (file line numbers).
        let signed_garbage = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nDate: x\n\u{7f}ELF\n-----BEGIN PGP SIGNATURE-----\n";
        let err = parse_release(signed_garbage).unwrap_err();
        assert_eq!(
            err,
            ReleaseError::Empty {
                first_bad_line: Some(5)
            }
        );
        assert_eq!(
            err.to_string(),
            "no Origin, Label, Suite or Codename (line 5 is unreadable)"
        );
    }
}
