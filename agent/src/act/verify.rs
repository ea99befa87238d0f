//! Checking a command before anything runs: the Ed25519 signature over the exact bytes the
//! server sent (with the key pinned at enrollment, or the newest one a verified rotation chain
//! led to), then this device's id and the expiry. Pure: the caller supplies the key, the device
//! id and the time (the server's time as learned on the stream, so a laptop whose clock is
//! hours off still judges a 15-minute signature right).

use prost::Message;
use vakt_proto::pb;

/// Why a command is refused. The text goes back to the server as the refusal's detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("bad signature: not signed by the server this agent enrolled with")]
    BadSignature,
    #[error("the signed command does not decode: {0}")]
    Undecodable(String),
    #[error("command for device {0}, not this one")]
    OtherDevice(String),
    #[error("command expired at {0} ms")]
    Expired(i64),
    #[error("command kind {0} is not known to this agent")]
    UnknownKind(i32),
    #[error("the pinned command key is not valid: {0}")]
    BadPinnedKey(String),
}

impl Refusal {
    /// A refusal the server may answer by signing the command again (a fresh expiry, or the
    /// key this agent has just moved to): such a refusal is not recorded as the command's
    /// final outcome. A forged command gains nothing from it: it is refused again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Refusal::Expired(_) | Refusal::BadSignature)
    }
}

/// Why a key rotation chain is refused. Nothing changes: the agent keeps the key it trusts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("key rollover {index} does not decode: {message}")]
    Undecodable { index: usize, message: String },
    #[error("key rollover {index} is not signed by the key this agent trusts")]
    BadSignature { index: usize },
    #[error("key rollover {index} names a new key of {len} bytes, not an Ed25519 key")]
    BadKey { index: usize, len: usize },
    #[error("key rollover {index} does not continue from the key before it (the chain is broken)")]
    Broken { index: usize },
    #[error("the key rotation chain does not lead from the key this agent trusts")]
    NoPath,
}

/// Follows a rotation chain from the `pinned` key: links before the pinned key are passed over,
/// each one from it on must be signed by the key before it. Returns the key to trust from now
/// on (the pinned one when the chain ends at it).
pub fn follow_chain(chain: &pb::KeyRolloverChain, pinned: &[u8]) -> Result<Vec<u8>, ChainError> {
    let mut key = pinned.to_vec();
    let mut moved = false;
    for (index, link) in chain.links.iter().enumerate() {
        let r = pb::KeyRollover::decode(link.rollover.as_slice()).map_err(|e| {
            ChainError::Undecodable {
                index,
                message: e.to_string(),
            }
        })?;
        if r.previous_public_key != key {
            if moved {
                return Err(ChainError::Broken { index });
            }
            // A rotation from before this agent's key (it enrolled later, or followed it).
            continue;
        }
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
            .verify(&link.rollover, &link.signature)
            .map_err(|_| ChainError::BadSignature { index })?;
        if r.new_public_key.len() != 32 {
            return Err(ChainError::BadKey {
                index,
                len: r.new_public_key.len(),
            });
        }
        key = r.new_public_key;
        moved = true;
    }
    let ends_here = chain.links.last().is_none_or(|last| {
        pb::KeyRollover::decode(last.rollover.as_slice()).is_ok_and(|r| r.new_public_key == pinned)
    });
    if moved || ends_here {
        Ok(key)
    } else {
        Err(ChainError::NoPath)
    }
}

/// Verifies a signed command and returns its content.
pub fn verify(
    signed: &pb::SignedCommand,
    pinned_key_hex: &str,
    device_id: &str,
    now_ms: i64,
) -> Result<pb::Command, Refusal> {
    let key = unhex(pinned_key_hex).ok_or_else(|| Refusal::BadPinnedKey(pinned_key_hex.into()))?;
    let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    pk.verify(&signed.command, &signed.signature)
        .map_err(|_| Refusal::BadSignature)?;
    let cmd = pb::Command::decode(signed.command.as_slice())
        .map_err(|e| Refusal::Undecodable(e.to_string()))?;
    if cmd.device_id != device_id {
        return Err(Refusal::OtherDevice(cmd.device_id));
    }
    if cmd.expires_at_ms <= now_ms {
        return Err(Refusal::Expired(cmd.expires_at_ms));
    }
    match pb::CommandKind::try_from(cmd.kind) {
        Ok(pb::CommandKind::Lock | pb::CommandKind::Unlock | pb::CommandKind::Wipe) => Ok(cmd),
        _ => Err(Refusal::UnknownKind(cmd.kind)),
    }
}

/// The command id of a signed command that failed verification, if it decodes at all, so the
/// refusal can be reported against it.
pub fn unverified_id(signed: &pb::SignedCommand) -> Option<String> {
    pb::Command::decode(signed.command.as_slice())
        .ok()
        .map(|c| c.id)
        .filter(|id| !id.is_empty())
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn signed(k: &Ed25519KeyPair, device: &str, expires: i64) -> pb::SignedCommand {
        let body = pb::Command {
            id: "cmd-1".into(),
            device_id: device.into(),
            kind: pb::CommandKind::Lock as i32,
            issued_at_ms: 0,
            expires_at_ms: expires,
            ..Default::default()
        }
        .encode_to_vec();
        pb::SignedCommand {
            signature: k.sign(&body).as_ref().to_vec(),
            command: body,
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn accepts_good_and_refuses_tampered_foreign_expired_other_device() {
        let k = key();
        let pin = hex(k.public_key().as_ref());
        let good = signed(&k, "dev-1", 100);
        assert_eq!(verify(&good, &pin, "dev-1", 50).unwrap().id, "cmd-1");

        let mut tampered = good.clone();
        let last = tampered.command.len() - 1;
        tampered.command[last] ^= 1;
        assert_eq!(
            verify(&tampered, &pin, "dev-1", 50),
            Err(Refusal::BadSignature)
        );

        let other_key = key();
        let foreign = signed(&other_key, "dev-1", 100);
        assert_eq!(
            verify(&foreign, &pin, "dev-1", 50),
            Err(Refusal::BadSignature)
        );

        assert_eq!(
            verify(&good, &pin, "dev-1", 100),
            Err(Refusal::Expired(100))
        );
        assert_eq!(
            verify(&good, &pin, "dev-2", 50),
            Err(Refusal::OtherDevice("dev-1".into()))
        );
        assert_eq!(unverified_id(&tampered).as_deref(), Some("cmd-1"));
        assert!(Refusal::Expired(1).is_retryable() && Refusal::BadSignature.is_retryable());
        assert!(!Refusal::OtherDevice("x".into()).is_retryable());
    }

    fn link(
        by: &Ed25519KeyPair,
        previous: &[u8],
        new: &[u8],
        generation: u32,
    ) -> pb::SignedKeyRollover {
        let rollover = pb::KeyRollover {
            previous_public_key: previous.to_vec(),
            new_public_key: new.to_vec(),
            generation,
            issued_at_ms: 1,
        }
        .encode_to_vec();
        pb::SignedKeyRollover {
            signature: by.sign(&rollover).as_ref().to_vec(),
            rollover,
        }
    }

    #[test]
    fn a_chain_is_followed_from_the_pinned_key_and_a_forged_link_changes_nothing() {
        let (k0, k1, k2) = (key(), key(), key());
        let (p0, p1, p2) = (
            k0.public_key().as_ref().to_vec(),
            k1.public_key().as_ref().to_vec(),
            k2.public_key().as_ref().to_vec(),
        );
        let chain = pb::KeyRolloverChain {
            links: vec![link(&k0, &p0, &p1, 1), link(&k1, &p1, &p2, 2)],
        };
        // Offline through both rotations: one step to the newest.
        assert_eq!(follow_chain(&chain, &p0), Ok(p2.clone()));
        // Enrolled after the first: starts at its own key.
        assert_eq!(follow_chain(&chain, &p1), Ok(p2.clone()));
        // Already there, and no rotation at all.
        assert_eq!(follow_chain(&chain, &p2), Ok(p2.clone()));
        assert_eq!(
            follow_chain(&pb::KeyRolloverChain::default(), &p0),
            Ok(p0.clone())
        );

        // A rollover from the trusted key, signed by someone else's key.
        let attacker = key();
        let forged = pb::KeyRolloverChain {
            links: vec![link(&attacker, &p0, attacker.public_key().as_ref(), 1)],
        };
        assert_eq!(
            follow_chain(&forged, &p0),
            Err(ChainError::BadSignature { index: 0 })
        );
        // A chain about other keys entirely.
        let (a, b) = (key(), key());
        let foreign = pb::KeyRolloverChain {
            links: vec![link(
                &a,
                a.public_key().as_ref(),
                b.public_key().as_ref(),
                1,
            )],
        };
        assert_eq!(follow_chain(&foreign, &p0), Err(ChainError::NoPath));
        // A genuine first link followed by a link that does not continue from it.
        let broken = pb::KeyRolloverChain {
            links: vec![
                link(&k0, &p0, &p1, 1),
                link(&a, a.public_key().as_ref(), &p2, 2),
            ],
        };
        assert_eq!(
            follow_chain(&broken, &p0),
            Err(ChainError::Broken { index: 1 })
        );
        // Garbage and a short key.
        let garbage = pb::KeyRolloverChain {
            links: vec![pb::SignedKeyRollover {
                rollover: vec![0xff, 0xff],
                signature: vec![],
            }],
        };
        assert!(matches!(
            follow_chain(&garbage, &p0),
            Err(ChainError::Undecodable { index: 0, .. })
        ));
        let short = pb::KeyRolloverChain {
            links: vec![link(&k0, &p0, &[1, 2, 3], 1)],
        };
        assert_eq!(
            follow_chain(&short, &p0),
            Err(ChainError::BadKey { index: 0, len: 3 })
        );
    }
}
