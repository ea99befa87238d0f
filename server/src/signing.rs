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
//! Where the generations live: with the embedded store, in the data directory: generation 0
//! is `command.key` (as before rotation existed); generation N ≥ 1 is `command-key.N.pem`,
//! holding the private key and its rollover statement. With PostgreSQL, sealed in the database
//! (`secrets.rs`, through the [`SharedGenerations`] trait, so this module stays below the
//! store), as the same text with a `created-ms:` line in front, so every replica signs with the
//! same keys. Generations are loaded in order and each link is verified against its
//! predecessor, so a keyring that was tampered with or half-copied refuses to start instead of
//! signing with a key no agent can follow.

use crate::fsutil::{read_opt, write_private};
use crate::pki::{PkiError, pem_encode};
use prost::Message;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use vakt_proto::pb;

const ROLLOVER_LABEL: &str = "VAKT KEY ROLLOVER";
const KEY_LABEL: &str = "PRIVATE KEY";
const CREATED: &str = "created-ms:";

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

/// Generations kept somewhere every replica reads (the database, sealed: `secrets.rs`). Each
/// generation's text is the one [`generation_text`] makes.
pub trait SharedGenerations: Send + Sync {
    /// How many generations are stored (0..count are all present).
    fn count(&self) -> Result<u32, PkiError>;
    /// The text of generation `n`, and a name for it in error messages.
    fn get(&self, n: u32) -> Result<(PathBuf, String), PkiError>;
    /// Stores generation `n` unless one is there already (another replica rotated first):
    /// `false` then, and nothing written.
    fn put_new(&self, n: u32, text: &str) -> Result<bool, PkiError>;
}

/// Where a keyring keeps its generations.
enum Backing {
    Dir(PathBuf),
    Shared(Box<dyn SharedGenerations>),
}

/// Every generation of the command-signing key, oldest first.
pub struct KeyRing {
    backing: Backing,
    generations: RwLock<Vec<Generation>>,
    /// Rotations and reloads one at a time, so two admins rotating at once make two
    /// generations in order and a reload never pushes a generation twice.
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

/// The stored text of a generation: its creation time, the private key and (from generation
/// 1 on) the rollover statement that introduced it.
pub fn generation_text(
    pkcs8: &[u8],
    link: Option<&pb::SignedKeyRollover>,
    created_ms: i64,
) -> String {
    let mut text = format!("{CREATED} {created_ms}\n{}", pem_encode(KEY_LABEL, pkcs8));
    if let Some(link) = link {
        text.push_str(&pem_encode(ROLLOVER_LABEL, &link.encode_to_vec()));
    }
    text
}

/// Parses generation `n` from its text (named `source` in errors) and checks it follows
/// `previous`. Generation 0's creation time is its `created-ms:` line (`fallback_ms` without
/// one: a file's modification time); later ones take the rollover's.
fn parse_generation(
    source: &Path,
    n: u32,
    text: &str,
    previous: Option<&Generation>,
    fallback_ms: i64,
) -> Result<Generation, PkiError> {
    let pkcs8 = pem_block(text, KEY_LABEL).ok_or_else(|| {
        bad(
            source,
            if n == 0 {
                "not a PEM private key"
            } else {
                "no PEM private key in the file"
            },
        )
    })?;
    let key = key_from(source, &pkcs8)?;
    let created_line = text
        .lines()
        .find_map(|l| l.strip_prefix(CREATED))
        .and_then(|v| v.trim().parse::<i64>().ok());
    let Some(previous) = previous else {
        return Ok(Generation {
            key,
            created_ms: created_line.unwrap_or(fallback_ms),
            link: None,
        });
    };
    let link_bytes = pem_block(text, ROLLOVER_LABEL)
        .ok_or_else(|| bad(source, "no rollover statement in the file"))?;
    let link = pb::SignedKeyRollover::decode(link_bytes.as_slice()).map_err(|e| {
        bad(
            source,
            format!("the rollover statement does not decode: {e}"),
        )
    })?;
    check_link(
        &link,
        previous.key.public_key().as_ref(),
        key.public_key().as_ref(),
        n,
    )
    .map_err(|m| bad(source, m))?;
    let created_ms = pb::KeyRollover::decode(link.rollover.as_slice())
        .map(|r| r.issued_at_ms)
        .unwrap_or(0);
    Ok(Generation {
        key,
        created_ms,
        link: Some(link),
    })
}

/// A file's modification time in ms since the epoch (0 when unknown).
fn modified_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Parses texts of generations 0, 1, … in order, each checked against the one before.
fn parse_all(texts: &[(PathBuf, String, i64)]) -> Result<Vec<Generation>, PkiError> {
    let mut generations: Vec<Generation> = Vec::with_capacity(texts.len());
    for (n, (source, text, fallback_ms)) in texts.iter().enumerate() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let g = parse_generation(source, n, text, generations.last(), *fallback_ms)?;
        generations.push(g);
    }
    Ok(generations)
}

/// The generations in `dir` as stored texts (the form the database keeps), oldest first, all
/// checked; `None` when the directory holds no `command.key`. What `migrate` and a PostgreSQL
/// server importing an older data directory seal into the database.
pub fn dir_generation_texts(dir: &Path) -> Result<Option<Vec<String>>, PkiError> {
    let texts = read_dir_texts(dir)?;
    if texts.is_empty() {
        return Ok(None);
    }
    let generations = parse_all(&texts)?;
    Ok(Some(
        texts
            .iter()
            .zip(&generations)
            .map(|((_, text, _), g)| {
                match pem_block(text, KEY_LABEL) {
                    Some(pkcs8) => generation_text(&pkcs8, g.link.as_ref(), g.created_ms),
                    // parse_all found the key in every text.
                    None => String::new(),
                }
            })
            .collect(),
    ))
}

/// Every generation file in `dir`, in order, with its modification time.
fn read_dir_texts(dir: &Path) -> Result<Vec<(PathBuf, String, i64)>, PkiError> {
    let mut texts = Vec::new();
    for n in 0.. {
        let path = generation_path(dir, n);
        let Some(text) = read_opt(&path).map_err(io(&path))? else {
            break;
        };
        let mtime = modified_ms(&path);
        texts.push((path, text, mtime));
    }
    Ok(texts)
}

/// A new generation 0's text.
pub fn first_generation_text(now_ms: i64) -> Result<String, PkiError> {
    let pkcs8 = new_pkcs8(Path::new("command.key"))?;
    Ok(generation_text(&pkcs8, None, now_ms))
}

impl KeyRing {
    /// Loads every generation under `dir`, creating generation 0 in an empty directory.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let first = generation_path(dir, 0);
        if read_opt(&first).map_err(io(&first))?.is_none() {
            let pkcs8 = new_pkcs8(&first)?;
            write_private(&first, pem_encode(KEY_LABEL, &pkcs8).as_bytes()).map_err(io(&first))?;
        }
        let generations = parse_all(&read_dir_texts(dir)?)?;
        Ok(Self {
            backing: Backing::Dir(dir.to_path_buf()),
            generations: RwLock::new(generations),
            rotating: std::sync::Mutex::new(()),
        })
    }

    /// Loads every generation `shared` holds (at least generation 0 must be there).
    pub fn load_shared(shared: Box<dyn SharedGenerations>) -> Result<Self, PkiError> {
        let count = shared.count()?;
        let mut texts = Vec::new();
        for n in 0..count {
            let (source, text) = shared.get(n)?;
            texts.push((source, text, 0));
        }
        let generations = parse_all(&texts)?;
        if generations.is_empty() {
            return Err(bad(
                Path::new("secrets"),
                "the database holds no command-signing key",
            ));
        }
        Ok(Self {
            backing: Backing::Shared(shared),
            generations: RwLock::new(generations),
            rotating: std::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Generation>> {
        self.generations.read().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> u32 {
        u32::try_from(self.read().len()).unwrap_or(u32::MAX)
    }

    /// Takes in the generations another replica stored since this one last looked; true when
    /// there were any. A keyring in a data directory has nobody else writing it: false.
    ///
    /// Why a count compared on use and every few seconds suffices (no change feed): a
    /// rotation is rare and only adds, generations are never changed or removed, and every
    /// path that must not miss one looks first (`vakt signing-key show|rotate`, signing for a
    /// generation this replica lacks, an agent trusting a key this replica does not know). The
    /// periodic look (`server::run`) only decides how soon this replica's own connected
    /// agents are handed the new chain.
    pub fn refresh(&self) -> Result<bool, PkiError> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked()
    }

    fn refresh_locked(&self) -> Result<bool, PkiError> {
        let Backing::Shared(shared) = &self.backing else {
            return Ok(false);
        };
        let stored = shared.count()?;
        let mut have = self.len();
        if stored <= have {
            return Ok(false);
        }
        while have < stored {
            let (source, text) = shared.get(have)?;
            let g = {
                let gens = self.read();
                parse_generation(&source, have, &text, gens.last(), 0)?
            };
            self.generations
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(g);
            have += 1;
        }
        Ok(true)
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

    /// The generation whose public key this is, looking in the shared store once when this
    /// replica does not know it (another replica's rotation the agent followed).
    pub fn generation_of(&self, public_key: &[u8]) -> Option<u32> {
        let find = || {
            self.read()
                .iter()
                .position(|g| g.key.public_key().as_ref() == public_key)
                .and_then(|n| u32::try_from(n).ok())
        };
        find().or_else(|| match self.refresh() {
            Ok(true) => find(),
            Ok(false) => None,
            Err(e) => {
                tracing::error!("reloading the command-signing keys: {e}");
                None
            }
        })
    }

    /// Signs `message` with generation `n` (the newest one the device acknowledged). A
    /// generation this replica does not have yet is looked for in the shared store first
    /// (another replica rotated); one nobody has (a data directory restored from before a
    /// rotation) signs with the newest: the agent refuses it visibly rather than the server
    /// refusing to send.
    pub fn sign(&self, n: u32, message: &[u8]) -> Vec<u8> {
        if n >= self.len()
            && let Err(e) = self.refresh()
        {
            tracing::error!("reloading the command-signing keys: {e}");
        }
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

    /// Makes a new generation, vouched for by the newest one, and stores it before it is used
    /// (a file, or the database). Returns its number. On a shared store, when another replica
    /// stored the same generation number first, its generations are taken in and the new one
    /// follows them.
    pub fn rotate(&self, now_ms: i64) -> Result<u32, PkiError> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        // A few rounds: each lost one means another replica's rotation went in.
        for _ in 0..8 {
            self.refresh_locked()?;
            let (n, pkcs8, generation) = self.next_generation(now_ms)?;
            let text = generation_text(&pkcs8, generation.link.as_ref(), now_ms);
            let stored = match &self.backing {
                Backing::Dir(dir) => {
                    // On disk before anyone is handed it: a crash after this loads it at
                    // the next start.
                    let path = generation_path(dir, n);
                    let file = format!(
                        "{}{}",
                        pem_encode(KEY_LABEL, &pkcs8),
                        generation
                            .link
                            .as_ref()
                            .map(|l| pem_encode(ROLLOVER_LABEL, &l.encode_to_vec()))
                            .unwrap_or_default()
                    );
                    write_private(&path, file.as_bytes()).map_err(io(&path))?;
                    true
                }
                Backing::Shared(shared) => shared.put_new(n, &text)?,
            };
            if stored {
                self.generations
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(generation);
                return Ok(n);
            }
        }
        Err(bad(
            Path::new("secrets"),
            "other replicas kept rotating the command-signing key at the same time; try again",
        ))
    }

    /// Generation `len` made from the newest: its number, private key and rollover.
    fn next_generation(&self, now_ms: i64) -> Result<(u32, Vec<u8>, Generation), PkiError> {
        let g = self.read();
        let n = u32::try_from(g.len()).unwrap_or(u32::MAX);
        let here = match &self.backing {
            Backing::Dir(dir) => generation_path(dir, n),
            Backing::Shared(_) => PathBuf::from(format!("secrets/command-key.{n}")),
        };
        let Some(last) = g.last() else {
            return Err(bad(&here, "the keyring is empty"));
        };
        let pkcs8 = new_pkcs8(&here)?;
        let key = key_from(&here, &pkcs8)?;
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
        Ok((
            n,
            pkcs8,
            Generation {
                key,
                created_ms: now_ms,
                link: Some(link),
            },
        ))
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
