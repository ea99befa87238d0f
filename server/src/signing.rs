//! The command-signing keys: rotation and retirement.
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
//! A rotation alone leaves the old private keys on the server, and whoever copies the data
//! directory or the database still holds a key some laptops obey. `vakt signing-key retire
//! --through N` ends that: the private keys of generations ≤ N (never the current one) are
//! destroyed, and only their public keys and rollover statements are kept, because an agent
//! that was offline still follows the chain from its pinned key, and the links are verified
//! with public keys alone. Nothing is ever signed with a retired generation: [`KeyRing::sign`]
//! says so as an error, and a device that trusts only a retired key waits, its commands
//! queued, until it acknowledges the chain handed to it (`commands::deliver`).
//!
//! Where the generations live: with the embedded store, in the data directory: generation 0
//! is `command.key` (as before rotation existed); generation N ≥ 1 is `command-key.N.pem`,
//! holding the private key and its rollover statement; a retired generation N (0 included) is
//! `command-key.N.retired.pem`, its public key and rollover statement. With PostgreSQL, sealed
//! in the database (`secrets.rs`, through the [`SharedGenerations`] trait, so this module stays
//! below the store), as the same text with a `created-ms:` line in front, so every replica signs
//! with the same keys. Generations are loaded in order and each link is verified against its
//! predecessor's public key, so a keyring that was tampered with or half-copied refuses to start
//! instead of signing with a key no agent can follow.
//!
//! Retiring a generation in a data directory takes two steps, each leaving a keyring that
//! loads: the retired file is written first (atomically, fsynced), then the private key file is
//! overwritten with zeros, fsynced and removed. Where both files exist (a crash between the
//! steps) the retired one is loaded and the private one destroyed at load, so an interrupted
//! retirement is finished, never undone.

use crate::fsutil::{read_opt, write_private};
use crate::pki::{PkiError, pem_encode};
use prost::Message;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use vakt_proto::pb;

const ROLLOVER_LABEL: &str = "VAKT KEY ROLLOVER";
const KEY_LABEL: &str = "PRIVATE KEY";
/// A retired generation's raw 32-byte Ed25519 public key (not SPKI, hence not `PUBLIC KEY`).
const PUBLIC_LABEL: &str = "VAKT PUBLIC KEY";
const CREATED: &str = "created-ms:";
const RETIRED: &str = "retired-ms:";

/// One generation of the command-signing key.
struct Generation {
    /// Its public key, kept after retirement: the chain and `show` need it.
    public: Vec<u8>,
    /// Its private key; `None` once retired.
    key: Option<Ed25519KeyPair>,
    /// When it was made (the rollover's time; the key file's for generation 0).
    created_ms: i64,
    /// When its private key was destroyed.
    retired_ms: Option<i64>,
    /// The statement that introduced it, signed by the generation before (none for 0).
    link: Option<pb::SignedKeyRollover>,
}

/// What `vakt signing-key show` lists for one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    pub generation: u32,
    pub public_key: Vec<u8>,
    pub created_ms: i64,
    /// When its private key was destroyed; `None` while the server can sign with it.
    pub retired_ms: Option<i64>,
}

/// What a shared store holds: how many generations (0..count, each live or retired) and which
/// of them are retired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub count: u32,
    pub retired: Vec<u32>,
}

/// Generations kept somewhere every replica reads (the database, sealed: `secrets.rs`). Each
/// generation's text is the one [`generation_text`] or [`retired_text`] makes.
pub trait SharedGenerations: Send + Sync {
    /// How many generations are stored and which are retired, from one cheap look (it runs
    /// every few seconds).
    fn list(&self) -> Result<Listing, PkiError>;
    /// The text of generation `n` (live or retired), and a name for it in error messages.
    fn get(&self, n: u32) -> Result<(PathBuf, String), PkiError>;
    /// Stores generation `n` unless one is there already (another replica rotated first):
    /// `false` then, and nothing written.
    fn put_new(&self, n: u32, text: &str) -> Result<bool, PkiError>;
    /// Replaces generation `n`'s private text with `text`, its retired form, in one durable
    /// step: once it returns, no replica can load the private key from the store.
    fn retire(&self, n: u32, text: &str) -> Result<(), PkiError>;
}

/// Why nothing was signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error(
        "command-signing key generation {0} is retired (its private key was destroyed): nothing can be signed with it"
    )]
    Retired(u32),
    #[error("the keyring holds no command-signing key")]
    Empty,
}

/// Why a retirement was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error("there is no generation {through}: the newest is {current}")]
    NoSuch { through: u32, current: u32 },
    #[error(
        "generation {0} is the current key: make a new one first (vakt signing-key rotate), then retire this one"
    )]
    Current(u32),
    #[error(transparent)]
    Pki(#[from] PkiError),
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
    /// Rotations, retirements and reloads one at a time, so two admins rotating at once make
    /// two generations in order and a reload never pushes a generation twice.
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

/// Where retired generation `n` is kept: its public key and rollover statement.
fn retired_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("command-key.{n}.retired.pem"))
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

fn rollover_pem(link: Option<&pb::SignedKeyRollover>) -> String {
    link.map(|l| pem_encode(ROLLOVER_LABEL, &l.encode_to_vec()))
        .unwrap_or_default()
}

/// The stored text of a generation: its creation time, the private key and (from generation
/// 1 on) the rollover statement that introduced it.
pub fn generation_text(
    pkcs8: &[u8],
    link: Option<&pb::SignedKeyRollover>,
    created_ms: i64,
) -> String {
    format!(
        "{CREATED} {created_ms}\n{}{}",
        pem_encode(KEY_LABEL, pkcs8),
        rollover_pem(link)
    )
}

/// The stored text of a retired generation: its creation and retirement times, its public
/// key and (from generation 1 on) its rollover statement. No private key.
pub fn retired_text(
    public: &[u8],
    link: Option<&pb::SignedKeyRollover>,
    created_ms: i64,
    retired_ms: i64,
) -> String {
    format!(
        "{CREATED} {created_ms}\n{RETIRED} {retired_ms}\n{}{}",
        pem_encode(PUBLIC_LABEL, public),
        rollover_pem(link)
    )
}

/// Whether a generation's stored text is a retired one (holds no private key).
pub fn is_retired_text(text: &str) -> bool {
    pem_block(text, KEY_LABEL).is_none()
}

/// The number after `prefix` on some line of `text`.
fn number_line(text: &str, prefix: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse::<i64>().ok())
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
    let (key, public, retired_ms) = match pem_block(text, KEY_LABEL) {
        Some(pkcs8) => {
            let key = key_from(source, &pkcs8)?;
            let public = key.public_key().as_ref().to_vec();
            (Some(key), public, None)
        }
        None => match pem_block(text, PUBLIC_LABEL) {
            Some(public) if public.len() == 32 => {
                (None, public, Some(number_line(text, RETIRED).unwrap_or(0)))
            }
            Some(public) => {
                return Err(bad(
                    source,
                    format!(
                        "the retired generation's public key has {} bytes, not 32",
                        public.len()
                    ),
                ));
            }
            None => {
                return Err(bad(
                    source,
                    if n == 0 {
                        "not a PEM private key"
                    } else {
                        "no PEM private key in the file"
                    },
                ));
            }
        },
    };
    let Some(previous) = previous else {
        return Ok(Generation {
            public,
            key,
            created_ms: number_line(text, CREATED).unwrap_or(fallback_ms),
            retired_ms,
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
    // The predecessor's public key suffices: a retired predecessor still vouches.
    check_link(&link, &previous.public, &public, n).map_err(|m| bad(source, m))?;
    let created_ms = pb::KeyRollover::decode(link.rollover.as_slice())
        .map(|r| r.issued_at_ms)
        .unwrap_or(0);
    Ok(Generation {
        public,
        key,
        created_ms,
        retired_ms,
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

/// A generation's stored text, where it came from (for errors) and the time to take for its
/// creation when the text does not say (a file's modification time).
type StoredText = (PathBuf, String, i64);

/// Parses texts of generations 0, 1, … in order, each checked against the one before.
fn parse_all(texts: &[StoredText]) -> Result<Vec<Generation>, PkiError> {
    let mut generations: Vec<Generation> = Vec::with_capacity(texts.len());
    for (n, (source, text, fallback_ms)) in texts.iter().enumerate() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let g = parse_generation(source, n, text, generations.last(), *fallback_ms)?;
        generations.push(g);
    }
    Ok(generations)
}

/// The generations in `dir` as stored texts (the form the database keeps), oldest first, all
/// checked; `None` when the directory holds no generation 0. What `migrate` and a PostgreSQL
/// server importing an older data directory seal into the database. Retired generations stay
/// retired ([`is_retired_text`]).
pub fn dir_generation_texts(dir: &Path) -> Result<Option<Vec<String>>, PkiError> {
    let (texts, _) = read_dir_texts(dir)?;
    if texts.is_empty() {
        return Ok(None);
    }
    let generations = parse_all(&texts)?;
    Ok(Some(
        texts
            .iter()
            .zip(&generations)
            .map(
                |((_, text, _), g)| match (&g.key, pem_block(text, KEY_LABEL)) {
                    (Some(_), Some(pkcs8)) => {
                        generation_text(&pkcs8, g.link.as_ref(), g.created_ms)
                    }
                    _ => retired_text(
                        &g.public,
                        g.link.as_ref(),
                        g.created_ms,
                        g.retired_ms.unwrap_or(0),
                    ),
                },
            )
            .collect(),
    ))
}

/// Every generation file in `dir`, in order, with its modification time (a retired file
/// rather than a private one where both exist), and the private key files a crashed
/// retirement left beside their retired files.
fn read_dir_texts(dir: &Path) -> Result<(Vec<StoredText>, Vec<PathBuf>), PkiError> {
    let mut texts = Vec::new();
    let mut leftovers = Vec::new();
    for n in 0.. {
        let retired = retired_path(dir, n);
        let live = generation_path(dir, n);
        let path = if read_opt(&retired).map_err(io(&retired))?.is_some() {
            if std::fs::symlink_metadata(&live).is_ok() {
                leftovers.push(live);
            }
            retired
        } else {
            live
        };
        let Some(text) = read_opt(&path).map_err(io(&path))? else {
            break;
        };
        let mtime = modified_ms(&path);
        texts.push((path, text, mtime));
    }
    Ok((texts, leftovers))
}

/// Destroys a private key file: its bytes overwritten with zeros and synced, then the file
/// removed and the directory synced. The overwrite is best effort (a copy-on-write or
/// journalling file system, or an SSD's remapping, may keep the old blocks); the removal is
/// what the keyring relies on. Absent already: done.
fn destroy(path: &Path) -> Result<(), PkiError> {
    use std::io::Write as _;
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) => {
            let len = f.metadata().map_err(io(path))?.len();
            let zeros = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 20)];
            f.write_all(&zeros).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        // The removal's durability; not every file system supports it, hence no `?`.
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new generation 0's text.
pub fn first_generation_text(now_ms: i64) -> Result<String, PkiError> {
    let pkcs8 = new_pkcs8(Path::new("command.key"))?;
    Ok(generation_text(&pkcs8, None, now_ms))
}

impl KeyRing {
    /// Loads every generation under `dir`, creating generation 0 in an empty directory, and
    /// finishes a retirement a crash interrupted (the private key files left beside their
    /// retired files are destroyed).
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let first = generation_path(dir, 0);
        let first_retired = retired_path(dir, 0);
        if read_opt(&first).map_err(io(&first))?.is_none()
            && read_opt(&first_retired)
                .map_err(io(&first_retired))?
                .is_none()
        {
            let pkcs8 = new_pkcs8(&first)?;
            write_private(&first, pem_encode(KEY_LABEL, &pkcs8).as_bytes()).map_err(io(&first))?;
        }
        let (texts, leftovers) = read_dir_texts(dir)?;
        let generations = parse_all(&texts)?;
        for path in leftovers {
            tracing::warn!(
                path = %path.display(),
                "finishing an interrupted retirement: destroying a retired generation's private key"
            );
            destroy(&path)?;
        }
        Ok(Self {
            backing: Backing::Dir(dir.to_path_buf()),
            generations: RwLock::new(generations),
            rotating: std::sync::Mutex::new(()),
        })
    }

    /// Loads every generation `shared` holds (at least generation 0 must be there).
    pub fn load_shared(shared: Box<dyn SharedGenerations>) -> Result<Self, PkiError> {
        let count = shared.list()?.count;
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

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Generation>> {
        self.generations.write().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> u32 {
        u32::try_from(self.read().len()).unwrap_or(u32::MAX)
    }

    /// Takes in what another replica changed since this one last looked: generations it
    /// stored, and generations it retired (their private keys leave this replica's memory
    /// too). True when anything changed. A keyring in a data directory has nobody else writing
    /// it: false.
    ///
    /// Why a listing compared on use and every few seconds suffices (no change feed):
    /// rotations and retirements are rare, a generation is only ever added or retired, and
    /// every path that must not miss one looks first (`vakt signing-key show|rotate|retire`,
    /// every signature, an agent trusting a key this replica does not know). The periodic look (`server::run`) only decides how soon this replica's own
    /// connected agents are handed the new chain.
    pub fn refresh(&self) -> Result<bool, PkiError> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked()
    }

    fn refresh_locked(&self) -> Result<bool, PkiError> {
        let Backing::Shared(shared) = &self.backing else {
            return Ok(false);
        };
        let listing = shared.list()?;
        let mut changed = false;
        for &n in &listing.retired {
            let i = usize::try_from(n).unwrap_or(usize::MAX);
            if self.read().get(i).is_none_or(|g| g.key.is_none()) {
                continue;
            }
            let (source, text) = shared.get(n)?;
            let g = {
                let gens = self.read();
                let previous = i.checked_sub(1).and_then(|p| gens.get(p));
                parse_generation(&source, n, &text, previous, 0)?
            };
            let mut gens = self.write();
            if let Some(slot) = gens.get_mut(i) {
                if slot.public != g.public {
                    return Err(bad(
                        &source,
                        "the retired generation names another key than this replica loaded",
                    ));
                }
                *slot = g;
                changed = true;
            }
        }
        let mut have = self.len();
        while have < listing.count {
            let (source, text) = shared.get(have)?;
            let g = {
                let gens = self.read();
                parse_generation(&source, have, &text, gens.last(), 0)?
            };
            self.write().push(g);
            have += 1;
            changed = true;
        }
        Ok(changed)
    }

    /// The newest generation and its public key (what a new enrollment pins).
    pub fn current(&self) -> (u32, Vec<u8>) {
        let g = self.read();
        let n = g.len().saturating_sub(1);
        let public = g.get(n).map(|x| x.public.clone()).unwrap_or_default();
        (u32::try_from(n).unwrap_or(u32::MAX), public)
    }

    /// The generation whose public key this is, looking in the shared store once when this
    /// replica does not know it (another replica's rotation the agent followed).
    pub fn generation_of(&self, public_key: &[u8]) -> Option<u32> {
        let find = || {
            self.read()
                .iter()
                .position(|g| g.public == public_key)
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

    /// Signs `message` with generation `n` (the newest one the device acknowledged). The
    /// shared store is looked at first: another replica may have rotated (a generation this
    /// one lacks) or retired this one, even the one this replica still takes for the newest.
    /// One names query per signature, and signing is rare (a command's delivery). A retired
    /// generation signs nothing ([`SignError::Retired`]). One nobody has (a data directory
    /// restored from before a rotation) signs with the newest: the agent refuses it visibly
    /// rather than the server refusing to send.
    pub fn sign(&self, n: u32, message: &[u8]) -> Result<Vec<u8>, SignError> {
        if let Err(e) = self.refresh() {
            tracing::error!("reloading the command-signing keys: {e}");
        }
        let g = self.read();
        let i = usize::try_from(n).unwrap_or(usize::MAX);
        let (n, generation) = match g.get(i) {
            Some(x) => (n, x),
            None => (
                u32::try_from(g.len().saturating_sub(1)).unwrap_or(u32::MAX),
                g.last().ok_or(SignError::Empty)?,
            ),
        };
        match &generation.key {
            Some(key) => Ok(key.sign(message).as_ref().to_vec()),
            None => Err(SignError::Retired(n)),
        }
    }

    /// Whether generation `n` is retired (a generation this keyring lacks is not).
    pub fn is_retired(&self, n: u32) -> bool {
        let i = usize::try_from(n).unwrap_or(usize::MAX);
        self.read().get(i).is_some_and(|g| g.key.is_none())
    }

    /// Every rollover statement, oldest first: what an agent behind the newest generation is
    /// handed. Retired generations' statements included: the chain is public keys only.
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
                public_key: g.public.clone(),
                created_ms: g.created_ms,
                retired_ms: g.retired_ms,
            })
            .collect()
    }

    /// Whether generations ≤ `through` may be retired: they exist and the current one is not
    /// among them.
    pub fn check_retirable(&self, through: u32) -> Result<(), RetireError> {
        let (current, _) = self.current();
        match through.cmp(&current) {
            std::cmp::Ordering::Less => Ok(()),
            std::cmp::Ordering::Equal => Err(RetireError::Current(through)),
            std::cmp::Ordering::Greater => Err(RetireError::NoSuch { through, current }),
        }
    }

    /// Destroys the private keys of generations ≤ `through` (never the current one), keeping
    /// their public keys and rollover statements, and returns the generations retired now
    /// (ones retired before are left as they are). Each is stored in its retired form before
    /// this keyring forgets its private key, so a failure part-way leaves every generation
    /// either retired or whole, on disk and here alike.
    pub fn retire(&self, through: u32, now_ms: i64) -> Result<Vec<u32>, RetireError> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked()?;
        self.check_retirable(through)?;
        let todo: Vec<(u32, String)> = self
            .read()
            .iter()
            .zip(0..=through)
            .filter(|(g, _)| g.key.is_some())
            .map(|(g, n)| {
                (
                    n,
                    retired_text(&g.public, g.link.as_ref(), g.created_ms, now_ms),
                )
            })
            .collect();
        let mut retired = Vec::with_capacity(todo.len());
        for (n, text) in todo {
            match &self.backing {
                Backing::Dir(dir) => {
                    // First the retired file, so every state after a crash loads (see the
                    // module doc); then the private key is destroyed.
                    let path = retired_path(dir, n);
                    write_private(&path, text.as_bytes()).map_err(io(&path))?;
                    destroy(&generation_path(dir, n))?;
                }
                Backing::Shared(shared) => shared.retire(n, &text)?,
            }
            let i = usize::try_from(n).unwrap_or(usize::MAX);
            if let Some(g) = self.write().get_mut(i) {
                g.key = None;
                g.retired_ms = Some(now_ms);
            }
            retired.push(n);
        }
        Ok(retired)
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
                        rollover_pem(generation.link.as_ref())
                    );
                    write_private(&path, file.as_bytes()).map_err(io(&path))?;
                    true
                }
                Backing::Shared(shared) => shared.put_new(n, &text)?,
            };
            if stored {
                self.write().push(generation);
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
        let Some(last_key) = &last.key else {
            // `retire` never takes the current generation; a store edited by hand might.
            return Err(bad(
                &here,
                "the newest generation is retired, so nothing can vouch for a new one",
            ));
        };
        let pkcs8 = new_pkcs8(&here)?;
        let key = key_from(&here, &pkcs8)?;
        let public = key.public_key().as_ref().to_vec();
        let rollover = pb::KeyRollover {
            previous_public_key: last.public.clone(),
            new_public_key: public.clone(),
            generation: n,
            issued_at_ms: now_ms,
        }
        .encode_to_vec();
        let link = pb::SignedKeyRollover {
            signature: last_key.sign(&rollover).as_ref().to_vec(),
            rollover,
        };
        Ok((
            n,
            pkcs8,
            Generation {
                public,
                key: Some(key),
                created_ms: now_ms,
                retired_ms: None,
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
        assert!(verify(&k0, b"lock", &ring.sign(0, b"lock").unwrap()));
        assert!(verify(&k2, b"lock", &ring.sign(2, b"lock").unwrap()));
        assert!(!verify(&k0, b"lock", &ring.sign(2, b"lock").unwrap()));
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

    /// Every file in `dir` whose text holds a private key.
    fn private_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("BEGIN PRIVATE KEY")))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Follows `chain` from `pinned` as an agent does, with public keys only.
    fn follow(chain: &pb::KeyRolloverChain, pinned: &[u8], n: u32) -> Vec<u8> {
        let mut key = pinned.to_vec();
        for (i, link) in chain.links.iter().enumerate().skip(n as usize) {
            let r = pb::KeyRollover::decode(link.rollover.as_slice()).unwrap();
            check_link(link, &key, &r.new_public_key, u32::try_from(i).unwrap() + 1).unwrap();
            key = r.new_public_key;
        }
        key
    }

    #[test]
    fn retirement_destroys_old_private_keys_and_the_chain_still_loads_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let k0 = ring.current().1;
        for t in 1..=3 {
            ring.rotate(t * 1_000).unwrap();
        }
        let chain = ring.chain();
        let k3 = ring.current().1;
        assert_eq!(ring.retire(1, 9_000).unwrap(), vec![0, 1]);

        // Only generations 2 and 3 can sign; asking for 0 or 1 is an error, not a panic.
        assert_eq!(ring.sign(0, b"lock"), Err(SignError::Retired(0)));
        assert_eq!(ring.sign(1, b"lock"), Err(SignError::Retired(1)));
        assert!(verify(&k3, b"lock", &ring.sign(3, b"lock").unwrap()));
        assert!(ring.is_retired(1) && !ring.is_retired(2));
        let retired: Vec<_> = ring.generations().iter().map(|g| g.retired_ms).collect();
        assert_eq!(retired, vec![Some(9_000), Some(9_000), None, None]);
        assert_eq!(
            private_files(dir.path()),
            vec!["command-key.2.pem", "command-key.3.pem"],
            "generations 0 and 1 hold no private key on disk"
        );
        assert!(!generation_path(dir.path(), 0).exists());

        // Reloaded from disk: the same chain, verified link by link from the retired keys'
        // public keys, and an agent pinned to generation 0 still reaches generation 3.
        let again = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(again.chain(), chain);
        assert_eq!(again.current(), (3, k3.clone()));
        assert_eq!(again.generations(), ring.generations());
        assert_eq!(again.sign(0, b"lock"), Err(SignError::Retired(0)));
        assert_eq!(follow(&again.chain(), &k0, 0), k3);
        assert_eq!(
            again.generation_of(&k0),
            Some(0),
            "a retired key is still known"
        );

        // Retiring again only takes what is still live; rotation goes on from the current key.
        assert_eq!(again.retire(2, 10_000).unwrap(), vec![2]);
        assert_eq!(again.retire(2, 11_000).unwrap(), Vec::<u32>::new());
        assert_eq!(again.rotate(12_000).unwrap(), 4);
        let last = KeyRing::load_or_create(dir.path()).unwrap();
        assert_eq!(follow(&last.chain(), &k0, 0), last.current().1);
        assert_eq!(last.generations()[2].retired_ms, Some(10_000));
        assert_eq!(
            private_files(dir.path()),
            vec!["command-key.3.pem", "command-key.4.pem"]
        );
    }

    #[test]
    fn retiring_the_current_or_a_missing_generation_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let err = ring.retire(0, 1).unwrap_err().to_string();
        assert!(err.contains("generation 0 is the current key"), "{err}");
        ring.rotate(1_000).unwrap();
        let err = ring.retire(1, 2).unwrap_err().to_string();
        assert!(err.contains("generation 1 is the current key"), "{err}");
        let err = ring.retire(7, 2).unwrap_err().to_string();
        assert!(err.contains("no generation 7: the newest is 1"), "{err}");
        let err = ring.retire(u32::MAX, 2).unwrap_err().to_string();
        assert!(err.contains("no generation"), "{err}");
        assert_eq!(
            private_files(dir.path()),
            vec!["command-key.1.pem", "command.key"]
        );
        assert!(ring.generations().iter().all(|g| g.retired_ms.is_none()));
    }

    #[test]
    fn every_state_of_an_interrupted_retirement_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        ring.rotate(1_000).unwrap();
        ring.rotate(2_000).unwrap();
        let chain = ring.chain();
        let public1 = ring.generations()[1].public_key.clone();
        let link1 = ring.read()[1].link.clone();
        let text1 = retired_text(&public1, link1.as_ref(), 1_000, 5_000);
        let live1 = generation_path(dir.path(), 1);

        // Crashed while writing the retired file: its temp file is ignored.
        std::fs::write(
            dir.path().join(".command-key.1.retired.pem.tmp"),
            &text1[..40],
        )
        .unwrap();
        let loaded = KeyRing::load_or_create(dir.path()).unwrap();
        assert!(!loaded.is_retired(1));
        assert_eq!(loaded.chain(), chain);

        // Crashed after the retired file, before or during the destruction of the private
        // one (whole, or already zeroed): it loads retired and the private file is destroyed.
        let whole = std::fs::read(&live1).unwrap();
        for private in [whole.clone(), vec![0u8; whole.len()]] {
            std::fs::write(&live1, &private).unwrap();
            std::fs::write(retired_path(dir.path(), 1), &text1).unwrap();
            let loaded = KeyRing::load_or_create(dir.path()).unwrap();
            assert!(loaded.is_retired(1));
            assert_eq!(loaded.sign(1, b"x"), Err(SignError::Retired(1)));
            assert_eq!(loaded.chain(), chain);
            assert!(!live1.exists(), "the interrupted retirement was finished");
        }
        // A retired file that names another key than the chain refuses to load.
        let other = retired_text(&[7u8; 32], link1.as_ref(), 1_000, 5_000);
        std::fs::write(retired_path(dir.path(), 1), other).unwrap();
        let err = KeyRing::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("command-key.1.retired.pem"), "{err}");
    }

    /// Generations in memory, shared by several keyrings as replicas share a database.
    #[derive(Clone, Default)]
    struct Memory(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl SharedGenerations for Memory {
        fn list(&self) -> Result<Listing, PkiError> {
            let texts = self.0.lock().unwrap();
            Ok(Listing {
                count: u32::try_from(texts.len()).unwrap(),
                retired: (0..)
                    .zip(texts.iter())
                    .filter(|(_, t)| is_retired_text(t))
                    .map(|(n, _)| n)
                    .collect(),
            })
        }
        fn get(&self, n: u32) -> Result<(PathBuf, String), PkiError> {
            let text = self.0.lock().unwrap()[n as usize].clone();
            Ok((PathBuf::from(format!("memory/{n}")), text))
        }
        fn put_new(&self, n: u32, text: &str) -> Result<bool, PkiError> {
            let mut texts = self.0.lock().unwrap();
            if texts.len() != n as usize {
                return Ok(false);
            }
            texts.push(text.to_string());
            Ok(true)
        }
        fn retire(&self, n: u32, text: &str) -> Result<(), PkiError> {
            self.0.lock().unwrap()[n as usize] = text.to_string();
            Ok(())
        }
    }

    #[test]
    fn a_retirement_on_one_replica_stops_the_others_signing_with_the_key() {
        let memory = Memory::default();
        memory
            .0
            .lock()
            .unwrap()
            .push(first_generation_text(0).unwrap());
        let a = KeyRing::load_shared(Box::new(memory.clone())).unwrap();
        let b = KeyRing::load_shared(Box::new(memory.clone())).unwrap();
        a.rotate(1_000).unwrap();
        assert!(
            b.sign(0, b"lock").is_ok(),
            "B signs for generation 0 before"
        );
        assert_eq!(a.retire(0, 2_000).unwrap(), vec![0]);
        assert!(is_retired_text(&memory.0.lock().unwrap()[0]));
        // B learns of it before signing for an old generation, without waiting for a tick.
        assert_eq!(b.sign(0, b"lock"), Err(SignError::Retired(0)));
        assert_eq!(b.generations()[0].retired_ms, Some(2_000));
        assert!(!b.refresh().unwrap(), "nothing new after that");
        let c = KeyRing::load_shared(Box::new(memory)).unwrap();
        assert_eq!(c.chain(), a.chain());
        assert!(c.is_retired(0));
        assert!(c.sign(1, b"lock").is_ok());
    }
}
