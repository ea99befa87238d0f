//! Checking a command before anything runs: the Ed25519 signature over the exact bytes the
//! server sent (with the key pinned at enrollment), then this device's id and the expiry.
//! Pure: the caller supplies the key, the device id and the time.

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

fn unhex(s: &str) -> Option<Vec<u8>> {
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
    }
}
