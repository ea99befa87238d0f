//! Shared secrets for replicas on one PostgreSQL database: the CA key and every
//! command-signing key generation, kept in the store's `secrets` tree, each sealed with
//! AES-256-GCM under the 32-byte key in `--secrets-key FILE`, with the item's name as the
//! associated data (so two sealed items cannot be swapped for each other).
//!
//! The replica that finds the database empty initialises it in one transaction: the sealed
//! secrets, the initial admin token and its audit entry. Two replicas starting at once on an
//! empty database both try; the database lets exactly one commit (SERIALIZABLE, and each
//! re-reads "is the CA there?" inside the transaction), the other loads the winner's secrets.
//! A key that does not open the stored secrets is refused before anything is written.
//!
//! The sled engine keeps its secrets as files in the data directory (`pki.rs`, `signing.rs`)
//! and never comes here.
//!
//! Layout of a sealed item: `VS1` ‖ 12-byte random nonce ‖ ciphertext and tag. The key file:
//! comment lines (`#`) and one line of 64 hexadecimal digits.

use crate::pki::PkiError;
use crate::signing::{Listing, SharedGenerations};
use crate::store::{InitOutcome, Store, StoreError};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::path::{Path, PathBuf};
use vakt_proto::pb;

const MAGIC: &[u8] = b"VS1";
/// The sealed CA certificate and key.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

/// The name of generation `n` in the `secrets` tree (zero-padded so the tree's order is the
/// generations' order).
pub fn generation_name(n: u32) -> String {
    format!("{LIVE_PREFIX}{n:010}")
}

/// The name of retired generation `n` (its public key and rollover statement, no private
/// key): a name of its own, so a replica sees a retirement from the names alone.
pub fn retired_generation_name(n: u32) -> String {
    format!("{RETIRED_PREFIX}{n:010}")
}

/// The item name for a generation's stored text, by whether it is retired.
fn name_for(n: u32, text: &str) -> String {
    if crate::signing::is_retired_text(text) {
        retired_generation_name(n)
    } else {
        generation_name(n)
    }
}

const LIVE_PREFIX: &str = "command-key.";
const RETIRED_PREFIX: &str = "retired-command-key.";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "a PostgreSQL store needs --secrets-key FILE (or secrets_key in server.toml): the CA key and the command-signing keys are kept in the database sealed with the key in FILE, which is created when the database is initialised"
    )]
    Required,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a Vakt secrets key ({message}); it holds one line of 64 hexadecimal digits"
    )]
    Malformed { path: PathBuf, message: String },
    #[error("the secrets key {path}: {message}")]
    Exposed { path: PathBuf, message: String },
    #[error(
        "{path}: the database's secrets were sealed with another key ({item} does not open with this one); give this replica a copy of the secrets key of the replica that initialised the database"
    )]
    WrongKey { path: PathBuf, item: String },
    #[error(
        "the secrets key {path} does not exist, but the database is already initialised; give this replica a copy of the secrets key of the replica that initialised it"
    )]
    Missing { path: PathBuf },
    #[error("the sealed secret {item} in the database is damaged: {message}")]
    Damaged { item: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// The 32-byte key that seals the shared secrets.
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(…)")
    }
}

impl SecretsKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(crate::token::random_bytes::<32>())
    }

    /// Parses the key file's text: `#` comments and blank lines, and one line of 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(line) = lines.next() else {
            return Err("the file is empty".into());
        };
        if lines.next().is_some() {
            return Err("more than one key line".into());
        }
        if line.len() != 64 {
            return Err(format!(
                "the key line has {} characters, not 64",
                line.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            let pair = line.get(2 * i..2 * i + 2).unwrap_or("");
            *b = u8::from_str_radix(pair, 16)
                .map_err(|_| format!("'{pair}' at position {} is not hexadecimal", 2 * i + 1))?;
        }
        Ok(Self(key))
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!(
            "# Vakt secrets key: seals the CA key and the command-signing keys in the database.\n\
             # Every replica of this installation needs a copy; keep it as secret as the CA key.\n\
             {}\n",
            crate::token::hex(&self.0)
        )
    }

    /// Reads the key at `path`; `None` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, SecretsError> {
        let io = |source| SecretsError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Judged before it is opened, and read through a bounded handle: a key file is 200
        // bytes, and a FIFO or a huge file put there by mistake must not hang or fill memory.
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {
                // It opens the CA key and the command-signing keys of the whole fleet.
                if let Some(message) = crate::fsutil::exposed(&m) {
                    return Err(SecretsError::Exposed {
                        path: path.to_path_buf(),
                        message,
                    });
                }
            }
            Ok(_) => {
                return Err(SecretsError::Malformed {
                    path: path.to_path_buf(),
                    message: "not a regular file".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, 4096), &mut text).map_err(
            |e| SecretsError::Malformed {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        )?;
        Self::parse(&text)
            .map(Some)
            .map_err(|message| SecretsError::Malformed {
                path: path.to_path_buf(),
                message,
            })
    }

    /// The key at `path`, or a new one written there; whether it was made now. Another
    /// process creating the same file at the same moment is not an error: its key is read.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SecretsError> {
        if let Some(k) = Self::load(path)? {
            return Ok((k, false));
        }
        match Self::create(path) {
            Ok(k) => Ok((k, true)),
            Err(SecretsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let k = Self::load(path)?.ok_or_else(|| SecretsError::Missing {
                    path: path.to_path_buf(),
                })?;
                Ok((k, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a new key to `path`, which must not exist (0600 from the first byte, synced).
    pub fn create(path: &Path) -> Result<Self, SecretsError> {
        use std::io::Write;
        let key = Self::generate();
        let io = |source| SecretsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(key.to_text().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(key)
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always a valid AES-256 key.
        #[allow(clippy::expect_used)]
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }
}

/// Seals `plaintext` as the item `name` with the given nonce (callers pass a random one:
/// [`seal`]).
pub fn seal_with_nonce(
    key: &SecretsKey,
    name: &str,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let mut body = plaintext.to_vec();
    // Sealing fails only for inputs over AES-GCM's limit (64 GiB), far beyond a key.
    #[allow(clippy::expect_used)]
    key.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut body,
        )
        .expect("a secret far under AES-GCM's size limit");
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    out
}

/// Seals `plaintext` as the item `name` under a fresh random nonce.
pub fn seal(key: &SecretsKey, name: &str, plaintext: &[u8]) -> Vec<u8> {
    seal_with_nonce(key, name, plaintext, crate::token::random_bytes())
}

/// Why a sealed item does not open.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not in the sealed layout at all (damaged).
    Layout(&'static str),
    /// The tag does not verify: another key, another item's blob, or tampering.
    Tag,
}

/// Opens the sealed item `name`.
pub fn open(key: &SecretsKey, name: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let rest = sealed.strip_prefix(MAGIC).ok_or(OpenError::Layout(
        "it does not start with the sealed-item marker",
    ))?;
    if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(OpenError::Layout("it is shorter than a nonce and a tag"));
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Layout("nonce"))?;
    let mut body = body.to_vec();
    let plain = key
        .aead()
        .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
        .map_err(|_| OpenError::Tag)?;
    Ok(plain.to_vec())
}

/// The secrets tree through the key: what a PostgreSQL replica reads and writes.
#[derive(Clone)]
pub struct SharedSecrets {
    store: Store,
    key: SecretsKey,
    key_path: PathBuf,
}

impl std::fmt::Debug for SharedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecrets")
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl SharedSecrets {
    /// The item `name`, opened; `None` when absent.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SecretsError> {
        let Some(sealed) = self.store.secret(name)? else {
            return Ok(None);
        };
        match open(&self.key, name, &sealed) {
            Ok(plain) => Ok(Some(plain)),
            Err(OpenError::Tag) => Err(SecretsError::WrongKey {
                path: self.key_path.clone(),
                item: name.to_string(),
            }),
            Err(OpenError::Layout(why)) => Err(SecretsError::Damaged {
                item: name.to_string(),
                message: why.to_string(),
            }),
        }
    }

    fn get_text(&self, name: &str) -> Result<String, SecretsError> {
        let plain = self.get(name)?.ok_or_else(|| SecretsError::Damaged {
            item: name.to_string(),
            message: "missing".into(),
        })?;
        String::from_utf8(plain).map_err(|_| SecretsError::Damaged {
            item: name.to_string(),
            message: "not UTF-8 text".into(),
        })
    }
}

fn pki_error(name: &str, e: SecretsError) -> PkiError {
    match e {
        SecretsError::Pki(p) => p,
        other => PkiError::Bad {
            path: PathBuf::from(format!("secrets/{name}")),
            message: other.to_string(),
        },
    }
}

impl SharedGenerations for SharedSecrets {
    fn list(&self) -> Result<Listing, PkiError> {
        // One short query for the names only: cheap enough to run every few seconds.
        let names = self
            .store
            .secret_names()
            .map_err(|e| pki_error("command-key", e.into()))?;
        let number = |name: &str, prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|n| n.parse::<u32>().ok())
        };
        let live = names
            .iter()
            .filter(|k| number(k, LIVE_PREFIX).is_some())
            .count();
        let retired: Vec<u32> = names
            .iter()
            .filter_map(|k| number(k, RETIRED_PREFIX))
            .collect();
        Ok(Listing {
            count: u32::try_from(live + retired.len()).unwrap_or(u32::MAX),
            retired,
        })
    }

    fn get(&self, n: u32) -> Result<(PathBuf, String), PkiError> {
        // Live first: a retirement inserts the retired item and removes the live one in one
        // transaction, so when the live one is gone the retired one is there.
        let name = generation_name(n);
        let live = self
            .store
            .secret(&name)
            .map_err(|e| pki_error(&name, e.into()))?;
        let name = if live.is_some() {
            name
        } else {
            retired_generation_name(n)
        };
        let text = self.get_text(&name).map_err(|e| pki_error(&name, e))?;
        Ok((PathBuf::from(format!("secrets/{name}")), text))
    }

    fn put_new(&self, n: u32, text: &str) -> Result<bool, PkiError> {
        let name = generation_name(n);
        let sealed = seal(&self.key, &name, text.as_bytes());
        self.store
            .put_new_secret(&name, &sealed)
            .map_err(|e| pki_error(&name, e.into()))
    }

    fn retire(&self, n: u32, text: &str) -> Result<(), PkiError> {
        let name = retired_generation_name(n);
        let sealed = seal(&self.key, &name, text.as_bytes());
        self.store
            .retire_secret(&generation_name(n), &name, &sealed)
            .map_err(|e| pki_error(&name, e.into()))
    }
}

/// What a replica starts with: the CA, the keyring's store, and on the replica that
/// initialised the database the initial admin token to write to `DIR/admin.token`.
#[derive(Debug)]
pub struct Opened {
    pub shared: SharedSecrets,
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub admin_token: Option<String>,
}

/// Whether the database holds sealed secrets already.
pub fn initialised(store: &Store) -> Result<bool, SecretsError> {
    Ok(store.secret(CA_KEY)?.is_some())
}

/// Loads the database's secrets with the key in `key_path`: refused when the file is missing
/// or malformed, or when the key does not open them (before anything is written anywhere).
pub fn load(store: &Store, key_path: &Path) -> Result<Opened, SecretsError> {
    let key = SecretsKey::load(key_path)?.ok_or_else(|| SecretsError::Missing {
        path: key_path.to_path_buf(),
    })?;
    let shared = SharedSecrets {
        store: store.clone(),
        key,
        key_path: key_path.to_path_buf(),
    };
    // The key first: a wrong key is said as such, not as a damaged certificate.
    let ca_key_pem = shared.get_text(CA_KEY)?;
    let ca_pem = shared.get_text(CA_CERT)?;
    Ok(Opened {
        shared,
        ca_pem,
        ca_key_pem,
        admin_token: None,
    })
}

/// The secrets to seal into an empty database: the CA and the command-signing generations.
pub struct Material {
    pub ca_pem: String,
    pub ca_key_pem: String,
    /// Each generation's text (`signing::generation_text`), oldest first.
    pub generations: Vec<String>,
}

impl Material {
    /// A data directory's own CA and keys (a server that ran on it before, embedded or on
    /// PostgreSQL before secrets were shared), checked; `None` when it has no CA.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, SecretsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            crate::fsutil::read_opt(&path).map_err(|source| SecretsError::Io { path, source })
        };
        let (Some(ca_pem), Some(ca_key_pem)) = (read("ca.pem")?, read("ca.key")?) else {
            return Ok(None);
        };
        // Refuse a CA key that does not load now, not at the first enrollment.
        rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::Bad {
            path: dir.join("ca.key"),
            message: e.to_string(),
        })?;
        let generations = match crate::signing::dir_generation_texts(dir)? {
            Some(g) => g,
            None => vec![crate::signing::first_generation_text(
                crate::timefmt::now_ms(),
            )?],
        };
        Ok(Some(Self {
            ca_pem,
            ca_key_pem,
            generations,
        }))
    }

    /// A new CA and a first command-signing key.
    pub fn fresh() -> Result<Self, SecretsError> {
        let (ca_pem, ca_key_pem) = crate::pki::new_ca()?;
        Ok(Self {
            ca_pem,
            ca_key_pem,
            generations: vec![crate::signing::first_generation_text(
                crate::timefmt::now_ms(),
            )?],
        })
    }

    /// Every item sealed under `key`, by name.
    pub fn sealed(&self, key: &SecretsKey) -> Vec<(String, Vec<u8>)> {
        let mut items = vec![
            (CA_CERT.to_string(), self.ca_pem.clone()),
            (CA_KEY.to_string(), self.ca_key_pem.clone()),
        ];
        for (n, text) in self.generations.iter().enumerate() {
            items.push((
                name_for(u32::try_from(n).unwrap_or(u32::MAX), text),
                text.clone(),
            ));
        }
        items
            .into_iter()
            .map(|(name, plain)| {
                let sealed = seal(key, &name, plain.as_bytes());
                (name, sealed)
            })
            .collect()
    }
}

/// Initialises an empty database with `material` (and, when it has no admin token yet, the
/// initial one with its audit entry), all in one transaction, sealed under the key in
/// `key_path` (created, 0600, if absent). When another replica initialised it first, its
/// secrets are loaded instead (and a key file made here is removed again: it seals nothing).
pub async fn initialise_or_load(
    store: &Store,
    key_path: &Path,
    material: Material,
) -> Result<Opened, SecretsError> {
    let (key, created) = SecretsKey::load_or_create(key_path)?;
    let items = material.sealed(&key);
    let token = if store.admin_token_count()? == 0 {
        Some(crate::token::new_admin_token(
            pb::Role::Admin,
            "initial-admin",
            "system",
            crate::timefmt::now_ms(),
        ))
    } else {
        None
    };
    let audit = token.as_ref().map(|t| crate::store::AuditDraft {
        actor: "system".into(),
        action: "admin-token.create".into(),
        target: t.record.id.clone(),
        detail: "first start: initial-admin".into(),
        at_ms: crate::timefmt::now_ms(),
    });
    let outcome = store
        .initialise_secrets(
            &items,
            token.as_ref().map(|t| (&t.hash, &t.record)),
            audit.as_ref(),
        )
        .await?;
    match outcome {
        InitOutcome::Lost => {
            if created {
                let _ = std::fs::remove_file(key_path);
            }
            tracing::info!("another replica initialised the database first; loading its secrets");
            load(store, key_path)
        }
        InitOutcome::Won { audited } => {
            if let (Some(draft), false) = (&audit, audited) {
                store
                    .audit(
                        &draft.actor,
                        &draft.action,
                        &draft.target,
                        &draft.detail,
                        draft.at_ms,
                    )
                    .await?;
            }
            if created {
                tracing::info!(
                    "initialised the database's secrets; the secrets key was written to {} (every replica needs a copy)",
                    key_path.display()
                );
            }
            Ok(Opened {
                shared: SharedSecrets {
                    store: store.clone(),
                    key,
                    key_path: key_path.to_path_buf(),
                },
                ca_pem: material.ca_pem,
                ca_key_pem: material.ca_key_pem,
                admin_token: token.map(|t| t.secret),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_items_open_only_with_their_key_and_name() {
        let key = SecretsKey::generate();
        let sealed = seal(&key, "ca.key", b"the CA key");
        assert_eq!(open(&key, "ca.key", &sealed).unwrap(), b"the CA key");
        // Another item's name: the associated data differs, so a swapped blob is refused.
        assert_eq!(
            open(&key, "command-key.0000000001", &sealed),
            Err(OpenError::Tag)
        );
        // Another key.
        assert_eq!(
            open(&SecretsKey::generate(), "ca.key", &sealed),
            Err(OpenError::Tag)
        );
        // One flipped bit.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(open(&key, "ca.key", &bad), Err(OpenError::Tag));
        // Not sealed at all.
        assert!(matches!(
            open(&key, "ca.key", b"VS1"),
            Err(OpenError::Layout(_))
        ));
        assert!(matches!(
            open(&key, "ca.key", b"plain"),
            Err(OpenError::Layout(_))
        ));
        // Fresh nonces: the same secret sealed twice differs.
        assert_ne!(sealed, seal(&key, "ca.key", b"the CA key"));
    }

    #[test]
    fn a_data_directory_with_retired_generations_is_sealed_with_them_retired() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, ca_key_pem) = crate::pki::new_ca().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), ca_key_pem).unwrap();
        let ring = crate::signing::KeyRing::load_or_create(dir.path()).unwrap();
        ring.rotate(1_000).unwrap();
        ring.retire(0, 2_000).unwrap();
        let key = SecretsKey::generate();
        let sealed = Material::from_dir(dir.path())
            .unwrap()
            .unwrap()
            .sealed(&key);
        let names: Vec<&str> = sealed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca.key",
                "retired-command-key.0000000000",
                "command-key.0000000001"
            ]
        );
        let retired = open(&key, names[2], &sealed[2].1).unwrap();
        let retired = String::from_utf8(retired).unwrap();
        assert!(crate::signing::is_retired_text(&retired), "{retired}");
        assert!(!retired.contains("PRIVATE KEY"), "{retired}");
    }

    #[test]
    fn the_key_file_round_trips_and_bad_ones_say_why() {
        let key = SecretsKey::generate();
        let again = SecretsKey::parse(&key.to_text()).unwrap();
        assert_eq!(again.0, key.0);
        for (text, why) in [
            ("", "empty"),
            ("# only a comment\n", "empty"),
            ("abcd\n", "4 characters, not 64"),
            (
                &format!("{}\n{}\n", "0".repeat(64), "1".repeat(64)),
                "more than one",
            ),
            (&format!("{}zz\n", "0".repeat(62)), "'zz' at position 63"),
        ] {
            let err = SecretsKey::parse(text).err().unwrap_or_default();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn key_files_are_created_private_once_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        assert!(SecretsKey::load(&path).unwrap().is_none());
        let key = SecretsKey::create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(SecretsKey::load(&path).unwrap().unwrap().0, key.0);
        assert!(SecretsKey::create(&path).is_err(), "never overwrites a key");
        crate::fsutil::write_private(&path, b"not a key\n").unwrap();
        let err = SecretsKey::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("secrets.key") && err.contains("not a Vakt secrets key"),
            "{err}"
        );
        let err = SecretsKey::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // A copy others can read (a careless `cp` to another replica): refused, named.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            crate::fsutil::write_private(&path, key.to_text().as_bytes()).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = SecretsKey::load(&path).unwrap_err().to_string();
            assert!(
                err.contains("the secrets key") && err.contains("mode 644"),
                "{err}"
            );
        }
    }
}
