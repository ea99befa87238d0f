//! The command-signing keys and their rotation.
//!
//! Lock, unlock and wipe are Ed25519-signed; an agent pins the public key it was given at
//! enrollment. A leaked key would forge commands for the whole fleet, so the key can rotate
//! (`vakt signing-key rotate`) without re-enrolling anyone: each new key (generation N) comes
//! with a *rollover statement* naming it, signed by generation N−1. Agents are handed the whole
//! chain over their authenticated stream and follow it from the key they trust, so a laptop that
//! was offline through several rotations catches up in one step. A device is signed for with
//! the newest generation it has acknowledged (`Device.command_key_generation`), never with a key
//! it does not trust yet.
//!
//! On disk, in the data directory: generation 0 is `command.key` (as before rotation existed);
//! generation N ≥ 1 is `command-key.N.pem`, holding the private key and its rollover statement.
//! Generations are loaded in order and each link is verified against its predecessor, so a
//! keyring that was tampered with or half-copied refuses to start instead of signing with a key
//! no agent can follow.

use crate::fsutil::{read_opt, write_private};
use crate::pki::{PkiError, pem_encode};
use prost::Message;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use vakt_proto::pb;

const ROLLOVER_LABEL: &str = "VAKT KEY ROLLOVER";
const KEY_LABEL: &str = "PRIVATE KEY";

/// One generation of the command-signing key.
struct Generation {
    key: Ed25519KeyPair,
    /// When it was made (the rollover's time; the key file's for generation 0).
    created_ms: i64,
    /// The statement that introduced it, signed by the generation before (none for 0).
    link: Option<pb::SignedKeyRollover>,
}

/// What `vakt signing-key show` lists for one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    pub generation: u32,
    pub public_key: Vec<u8>,
    pub created_ms: i64,
}

/// Every generation of the command-signing key, oldest first.
pub struct KeyRing {
    dir: PathBuf,
    generations: RwLock<Vec<Generation>>,
    /// Rotations one at a time, so two admins rotating at once make two generations in order.
    rotating: std::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

fn bad(path: &Path, message: impl Into<String>) -> PkiError {
    PkiError::Bad {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn generation_path(dir: &Path, n: u32) -> PathBuf {
    if n == 0 {
        dir.join("command.key")
    } else {
        dir.join(format!("command-key.{n}.pem"))
    }
}

fn new_pkcs8(path: &Path) -> Result<Vec<u8>, PkiError> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| bad(path, e.to_string()))
}

fn key_from(path: &Path, pkcs8: &[u8]) -> Result<Ed25519KeyPair, PkiError> {
    Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| bad(path, e.to_string()))
}

/// Checks that `link` introduces `key` as generation `n`, signed by `previous`.
pub fn check_link(
    link: &pb::SignedKeyRollover,
    previous: &[u8],
    new_public: &[u8],
    n: u32,
) -> Result<(), String> {
    UnparsedPublicKey::new(&ED25519, previous)
        .verify(&link.rollover, &link.signature)
        .map_err(|_| "the rollover is not signed by the previous generation's key".to_string())?;
    let r = pb::KeyRollover::decode(link.rollover.as_slice())
        .map_err(|e| format!("the rollover does not decode: {e}"))?;
    if r.generation != n {
        return Err(format!(
            "the rollover names generation {}, not {n}",
            r.generation
        ));
    }
    if r.previous_public_key != previous || r.new_public_key != new_public {
        return Err("the rollover names other keys than the files hold".into());
    }
    Ok(())
}

impl KeyRing {
    /// Loads every generation under `dir`, creating generation 0 in an empty directory.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let first = generation_path(dir, 0);
        let pkcs8 = match read_opt(&first).map_err(io(&first))? {
            Some(pem) => {
                pem_block(&pem, KEY_LABEL).ok_or_else(|| bad(&first, "not a PEM private key"))?
            }
            None => {
                let pkcs8 = new_pkcs8(&first)?;
                write_private(&first, pem_encode(KEY_LABEL, &pkcs8).as_bytes())
                    .map_err(io(&first))?;
                pkcs8
            }
        };
        let created_ms = std::fs::metadata(&first)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut generations = vec![Generation {
            key: key_from(&first, &pkcs8)?,
            created_ms,
            link: None,
        }];
        for n in 1.. {
            let path = generation_path(dir, n);
            let Some(text) = read_opt(&path).map_err(io(&path))? else {
                break;
            };
            let pkcs8 = pem_block(&text, KEY_LABEL)
                .ok_or_else(|| bad(&path, "no PEM private key in the file"))?;
            let key = key_from(&path, &pkcs8)?;
            let link_bytes = pem_block(&text, ROLLOVER_LABEL)
                .ok_or_else(|| bad(&path, "no rollover statement in the file"))?;
            let link = pb::SignedKeyRollover::decode(link_bytes.as_slice()).map_err(|e| {
                bad(
                    &path,
                    format!("the rollover statement does not decode: {e}"),
                )
            })?;
            let previous = generations
                .last()
                .map(|g| g.key.public_key().as_ref().to_vec())
                .unwrap_or_default();
            check_link(&link, &previous, key.public_key().as_ref(), n)
                .map_err(|m| bad(&path, m))?;
            let created_ms = pb::KeyRollover::decode(link.rollover.as_slice())
                .map(|r| r.issued_at_ms)
                .unwrap_or(0);
            generations.push(Generation {
                key,
                created_ms,
                link: Some(link),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            generations: RwLock::new(generations),
            rotating: std::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Generation>> {
        self.generations.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest generation and its public key (what a new enrollment pins).
    pub fn current(&self) -> (u32, Vec<u8>) {
        let g = self.read();
        let n = g.len().saturating_sub(1);
        let public = g
            .get(n)
            .map(|x| x.key.public_key().as_ref().to_vec())
            .unwrap_or_default();
        (u32::try_from(n).unwrap_or(u32::MAX), public)
    }

    /// The generation whose public key this is.
    pub fn generation_of(&self, public_key: &[u8]) -> Option<u32> {
        self.read()
            .iter()
            .position(|g| g.key.public_key().as_ref() == public_key)
            .and_then(|n| u32::try_from(n).ok())
    }

    /// Signs `message` with generation `n` (the newest one the device acknowledged). A
    /// generation this keyring does not have (a data directory restored from before a
    /// rotation) signs with the newest: the agent refuses it visibly rather than the server
    /// refusing to send.
    pub fn sign(&self, n: u32, message: &[u8]) -> Vec<u8> {
        let g = self.read();
        let i = usize::try_from(n).unwrap_or(usize::MAX);
        match g.get(i).or_else(|| g.last()) {
            Some(g) => g.key.sign(message).as_ref().to_vec(),
            None => Vec::new(),
        }
    }

    /// Every rollover statement, oldest first: what an agent behind the newest generation is
    /// handed.
    pub fn chain(&self) -> pb::KeyRolloverChain {
        pb::KeyRolloverChain {
            links: self.read().iter().filter_map(|g| g.link.clone()).collect(),
        }
    }

    /// The generations, oldest first.
    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.read()
            .iter()
            .enumerate()
            .map(|(n, g)| GenerationInfo {
                generation: u32::try_from(n).unwrap_or(u32::MAX),
                public_key: g.key.public_key().as_ref().to_vec(),
                created_ms: g.created_ms,
            })
            .collect()
    }

    /// Makes a new generation, vouched for by the newest one, and writes it before it is used.
    /// Returns its number.
    pub fn rotate(&self, now_ms: i64) -> Result<u32, PkiError> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let (n, generation) = {
            let g = self.read();
            let n = u32::try_from(g.len()).unwrap_or(u32::MAX);
            let Some(last) = g.last() else {
                return Err(bad(&self.dir, "the keyring is empty"));
            };
            let path = generation_path(&self.dir, n);
            let pkcs8 = new_pkcs8(&path)?;
            let key = key_from(&path, &pkcs8)?;
            let rollover = pb::KeyRollover {
                previous_public_key: last.key.public_key().as_ref().to_vec(),
                new_public_key: key.public_key().as_ref().to_vec(),
                generation: n,
                issued_at_ms: now_ms,
            }
            .encode_to_vec();
            let link = pb::SignedKeyRollover {
                signature: last.key.sign(&rollover).as_ref().to_vec(),
                rollover,
            };
            let text = format!(
                "{}{}",
                pem_encode(KEY_LABEL, &pkcs8),
                pem_encode(ROLLOVER_LABEL, &link.encode_to_vec())
            );
            // On disk before anyone is handed it: a crash after this loads it at the next start.
            write_private(&path, text.as_bytes()).map_err(io(&path))?;
            (
                n,
                Generation {
                    key,
                    created_ms: now_ms,
                    link: Some(link),
                },
            )
        };
        self.generations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(generation);
        Ok(n)
    }
}

/// The first PEM block labelled `label` in `text`, decoded.
fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text.get(start..)?.find(&end)?;
    let body: String = text.get(start..stop)?.split_whitespace().collect();
    crate::pki::base64_decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, public)
            .verify(msg, sig)
            .is_ok()
    }

    #[test]
    fn rotation_chains_generations_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let (g0, k0) = ring.current();
        assert_eq!(g0, 0);
        assert!(ring.chain().links.is_empty());
        assert_eq!(ring.rotate(1_000).unwrap(), 1);
        assert_eq!(ring.rotate(2_000).unwrap(), 2);
        let (g2, k2) = ring.current();
        assert_eq!(g2, 2);
        assert_ne!(k0, k2);
        // Each device is signed for with the generation it trusts.
        assert!(verify(&k0, b"lock", &ring.sign(0, b"lock")));
        assert!(verify(&k2, b"lock", &ring.sign(2, b"lock")));
        assert!(!verify(&k0, b"lock", &ring.sign(2, b"lock")));
        let chain = ring.chain();
        assert_eq!(chain.links.len(), 2);
        let k1 = ring.generations()[1].public_key.clone();
        check_link(&chain.links[0], &k0, &k1, 1).unwrap();
        check_link(&chain.links[1], &k1, &k2, 2).unwrap();
        assert_eq!(ring.generation_of(&k1), Some(1));

        let again = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(again.current(), (2, k2));
        assert_eq!(again.chain(), chain);
        assert_eq!(again.generations()[2].created_ms, 2_000);
    }

    #[test]
    fn a_tampered_or_foreign_generation_refuses_to_load() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        ring.rotate(1_000).unwrap();
        // Generation 1's key swapped for a key its rollover does not name.
        let path = generation_path(dir.path(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        let other = pem_encode(KEY_LABEL, &new_pkcs8(&path).unwrap());
        let rollover = text.find("-----BEGIN VAKT").unwrap();
        std::fs::write(&path, format!("{other}{}", &text[rollover..])).unwrap();
        let err = KeyRing::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("command-key.1.pem"), "{err}");
        assert!(err.contains("other keys"), "{err}");

        // A rollover signed by a key that is not generation 0's.
        let dir = tempfile::tempdir().unwrap();
        let foreign = tempfile::tempdir().unwrap();
        KeyRing::load_or_create(dir.path()).unwrap();
        let other_ring = KeyRing::load_or_create(foreign.path()).unwrap();
        other_ring.rotate(1_000).unwrap();
        std::fs::copy(
            generation_path(foreign.path(), 1),
            generation_path(dir.path(), 1),
        )
        .unwrap();
        let err = KeyRing::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not signed by the previous"), "{err}");

        // Garbage.
        std::fs::write(generation_path(dir.path(), 1), "hello").unwrap();
        let err = KeyRing::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no PEM private key"), "{err}");
    }
}
