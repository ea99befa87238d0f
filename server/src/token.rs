//! Secrets handed to people and agents: admin API tokens and enrollment tokens.
//!
//! A token is a kind prefix and 32 random bytes in hex (`vakt_a_…` admin, `vakt_e_…`
//! enrollment). The store keeps only its sha-256; tokens are random and long, so a plain hash
//! is enough (no password-style stretching). Its public id is the first 12 hex digits of that
//! hash, so logs and messages can name a token without revealing it.

use std::fmt::Write;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Admin,
    Enroll,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Admin => "vakt_a_",
            Self::Enroll => "vakt_e_",
        }
    }
}

/// Cryptographically random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    // The OS random source failing is not something a server can work around.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random source failed");
    b
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A new secret token of `kind`.
pub fn generate(kind: TokenKind) -> String {
    format!("{}{}", kind.prefix(), hex(&random_bytes::<32>()))
}

/// A new admin token: the secret (shown once), its stored hash and record.
pub struct NewAdminToken {
    pub secret: String,
    pub hash: [u8; 32],
    pub record: vakt_proto::pb::AdminTokenRecord,
}

/// A new admin token with no expiry and no approval pending, made by `created_by` at `now_ms`.
pub fn new_admin_token(
    role: vakt_proto::pb::Role,
    name: &str,
    created_by: &str,
    now_ms: i64,
) -> NewAdminToken {
    let secret = generate(TokenKind::Admin);
    NewAdminToken {
        hash: hash(&secret),
        record: vakt_proto::pb::AdminTokenRecord {
            id: id_of(&secret),
            name: name.to_string(),
            role: role as i32,
            created_at_ms: now_ms,
            created_by: created_by.to_string(),
            ..Default::default()
        },
        secret,
    }
}

/// The stored form of a token.
pub fn hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The public id of a token: what messages and the audit log show.
pub fn id_of(token: &str) -> String {
    hex(&hash(token)[..6])
}

/// A short, safe rendering of a token someone presented, for error messages: its prefix and
/// the first few characters, never the whole secret.
pub fn redacted(token: &str) -> String {
    let t = token.trim();
    let shown: String = t.chars().take(11).collect();
    if t.chars().count() > 11 {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hash_stably() {
        let a = generate(TokenKind::Admin);
        let b = generate(TokenKind::Admin);
        assert_ne!(a, b);
        assert!(a.starts_with("vakt_a_") && a.len() == 7 + 64);
        assert_eq!(
            hash(&a),
            hash(&format!("{a}\n")),
            "trailing newline from a file is ignored"
        );
        assert_eq!(id_of(&a).len(), 12);
        assert_eq!(redacted(&a).chars().count(), 12);
        assert!(!redacted(&a).contains(&a[11..]));
    }
}
