//! Installed software and where each program came from (INTERFACE.md `software[]`).
//!
//! One module per packaging format. Each exposes `collect(root) -> Collected<Vec<Package>>`
//! built on pure parsers; a source that fails becomes an error entry and the rest stands.
//! (This file only declares the non-Debian formats; the Debian/apt side is merged in beside it.)

pub mod files;
pub mod flatpak;
pub mod macos;
// rpm is Linux-only, and its SQLite is C: gating it keeps cross-checks free of a C toolchain.
#[cfg(target_os = "linux")]
pub mod rpm;
pub mod snap;
pub mod unmanaged;
pub mod windows;
