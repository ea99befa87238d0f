//! What the agent keeps in its state directory: its identity (key, certificate, the server's
//! CA and command key pinned at enrollment) and its report bookkeeping. Every file is written
//! atomically and readable only by root (the directory is 0700, files 0600).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Replace(#[from] crate::atomic::ReplaceError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who this agent is to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub device_id: String,
    pub server: String,
    /// Hex of the Ed25519 key that signs commands, pinned at enrollment.
    pub command_public_key: String,
    pub enrolled_at_ms: i64,
    #[serde(skip)]
    pub key_pem: String,
    #[serde(skip)]
    pub cert_pem: String,
    #[serde(skip)]
    pub ca_pem: String,
}

/// Report bookkeeping: the last sequence number used and the hash of each section the server
/// acknowledged. Updated only after an acknowledgement, so a crash re-sends rather than loses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportState {
    pub sequence: u64,
    /// Section kind name → hex hash acknowledged.
    pub acked: BTreeMap<String, String>,
    pub last_ack_ms: i64,
}

/// Where a new key and certificate are written together before they replace the old ones.
const PAIR_FILE: &str = "tls-next.pem";

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens the directory, creating it (0700) if needed.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The identity, if the agent has enrolled.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        let meta_path = self.path("identity.json");
        let Some(meta) = read_opt(&meta_path)? else {
            return Ok(None);
        };
        let mut id: Identity = serde_json::from_str(&meta).map_err(|e| StateError::Corrupt {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
        let need = |name: &str| -> Result<String, StateError> {
            let p = self.path(name);
            read_opt(&p)?.ok_or(StateError::Corrupt {
                path: p,
                message: "missing although identity.json exists; remove identity.json to re-enroll"
                    .into(),
            })
        };
        match self.pending_pair()? {
            Some((key, cert)) => (id.key_pem, id.cert_pem) = (key, cert),
            None => {
                id.key_pem = need("key.pem")?;
                id.cert_pem = need("cert.pem")?;
            }
        }
        id.ca_pem = need("ca.pem")?;
        Ok(Some(id))
    }

    /// A key and certificate written together by [`StateDir::save_pair`] whose copy into
    /// key.pem and cert.pem may not have finished.
    fn pending_pair(&self) -> Result<Option<(String, String)>, StateError> {
        let p = self.path(PAIR_FILE);
        let Some(text) = read_opt(&p)? else {
            return Ok(None);
        };
        match text.find("-----BEGIN CERTIFICATE-----") {
            Some(at) if text[..at].contains("PRIVATE KEY-----") => {
                Ok(Some((text[..at].to_string(), text[at..].to_string())))
            }
            _ => Err(StateError::Corrupt {
                path: p,
                message: "not a private key followed by a certificate".into(),
            }),
        }
    }

    /// Saves a key and its certificate as one: both go into one file by an atomic rename
    /// first, so a crash can never leave a key with another key's certificate (which would
    /// lock the agent out); then into key.pem and cert.pem, and the joint file goes.
    pub fn save_pair(&self, key_pem: &str, cert_pem: &str) -> Result<(), StateError> {
        let pair = self.path(PAIR_FILE);
        write_atomic(&pair, format!("{key_pem}{cert_pem}").as_bytes())?;
        write_atomic(&self.path("key.pem"), key_pem.as_bytes())?;
        write_atomic(&self.path("cert.pem"), cert_pem.as_bytes())?;
        match std::fs::remove_file(&pair) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&pair)(e)),
        }
    }

    /// Saves a new identity. identity.json goes last: it is what marks enrollment complete.
    pub fn save_identity(&self, id: &Identity) -> Result<(), StateError> {
        self.save_pair(&id.key_pem, &id.cert_pem)?;
        write_atomic(&self.path("ca.pem"), id.ca_pem.as_bytes())?;
        let meta = serde_json::to_vec_pretty(id).map_err(|e| StateError::Corrupt {
            path: self.path("identity.json"),
            message: e.to_string(),
        })?;
        write_atomic(&self.path("identity.json"), &meta)
    }

    /// Replaces the trusted command-signing key (hex) in identity.json, leaving the rest.
    pub fn save_command_key(&self, key_hex: &str) -> Result<(), StateError> {
        let path = self.path("identity.json");
        let text = read_opt(&path)?.ok_or_else(|| StateError::Corrupt {
            path: path.clone(),
            message: "missing: the agent is not enrolled".into(),
        })?;
        let mut id: Identity = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        id.command_public_key = key_hex.to_string();
        let meta = serde_json::to_vec_pretty(&id).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &meta)
    }

    pub fn report_state(&self) -> Result<ReportState, StateError> {
        let p = self.path("report.json");
        match read_opt(&p)? {
            None => Ok(ReportState::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                path: p,
                message: e.to_string(),
            }),
        }
    }

    pub fn save_report_state(&self, s: &ReportState) -> Result<(), StateError> {
        let p = self.path("report.json");
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| StateError::Corrupt {
            path: p.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&p, &bytes)
    }
}

fn read_opt(path: &Path) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Replaces `path` with `data`, readable only by the agent (0600 from the first byte): a new
/// file written and synced, renamed over, the directory synced (`atomic::write_private`).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    Ok(crate::atomic::write_private(path, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_written_together_wins_over_a_half_finished_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(&dir.path().join("state")).unwrap();
        let id = Identity {
            device_id: "dev-1".into(),
            server: "https://x".into(),
            command_public_key: "00".into(),
            enrolled_at_ms: 1,
            key_pem: "-----BEGIN PRIVATE KEY-----\nold\n-----END PRIVATE KEY-----\n".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----\n".into(),
            ca_pem: "ca".into(),
        };
        s.save_identity(&id).unwrap();
        assert!(
            !s.path(PAIR_FILE).exists(),
            "the joint file goes once copied"
        );
        // A crash after the joint file was written, with key.pem copied and cert.pem not yet:
        let key = "-----BEGIN PRIVATE KEY-----\nnew\n-----END PRIVATE KEY-----\n";
        let cert = "-----BEGIN CERTIFICATE-----\nnew\n-----END CERTIFICATE-----\n";
        write_atomic(&s.path(PAIR_FILE), format!("{key}{cert}").as_bytes()).unwrap();
        write_atomic(&s.path("key.pem"), key.as_bytes()).unwrap();
        let got = s.identity().unwrap().unwrap();
        assert_eq!((got.key_pem.as_str(), got.cert_pem.as_str()), (key, cert));
        // A joint file that is not a key and a certificate is refused, not half used.
        write_atomic(&s.path(PAIR_FILE), b"garbage").unwrap();
        assert!(s.identity().is_err());
    }

    #[test]
    fn identity_round_trip_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(&dir.path().join("state")).unwrap();
        assert!(s.identity().unwrap().is_none());
        let id = Identity {
            device_id: "dev-1".into(),
            server: "https://x".into(),
            command_public_key: "00".into(),
            enrolled_at_ms: 1,
            key_pem: "KEY".into(),
            cert_pem: "CERT".into(),
            ca_pem: "CA".into(),
        };
        s.save_identity(&id).unwrap();
        assert_eq!(s.identity().unwrap().unwrap(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.path("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_report_state_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        std::fs::write(s.path("report.json"), "{not json").unwrap();
        let err = s.report_state().unwrap_err().to_string();
        assert!(err.contains("report.json"), "{err}");
    }
}
