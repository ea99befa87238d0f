//! apt's version hash (`debListParser::VersionHash`): what tells two builds of the same version
//! string apart.
//!
//! apt treats a list's `1.0-1` as the installed `1.0-1` only when this hash of the relationship
//! fields and the installed size agrees too; otherwise the repository offers a *different*
//! package under the same version (a local rebuild, another vendor's build) and apt lists it as
//! a separate row in `apt-cache policy`. The attribution follows apt, so the same version from a
//! repository whose build differs does not make an installed package that repository's.

/// The fields hashed, in the order apt hashes them.
pub const FIELDS: [&str; 6] = [
    "Installed-Size",
    "Depends",
    "Pre-Depends",
    "Conflicts",
    "Breaks",
    "Replaces",
];

/// Accumulates the hash over field values, fed in [`FIELDS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(5381)
    }
}

impl Fingerprint {
    /// Adds one field's raw value (continuation lines included). As in apt, whitespace and `=`
    /// are skipped (dpkg reformats relations: `<` becomes `<=`, spacing changes), a `0:` epoch
    /// is dropped and letters are lowercased.
    pub fn feed(&mut self, value: &[u8]) {
        let mut i = 0;
        while i < value.len() {
            let c = value[i];
            if c == b'0' && value.get(i + 1) == Some(&b':') {
                i += 2;
                continue;
            }
            i += 1;
            if matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b'=') {
                continue;
            }
            self.0 = self
                .0
                .wrapping_mul(33)
                .wrapping_add(u64::from(c.to_ascii_lowercase()));
        }
    }

    /// The hash, cut to 32 bits as apt stores it.
    pub fn value(self) -> u32 {
        (self.0 & 0xffff_ffff) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[&str]) -> u32 {
        let mut f = Fingerprint::default();
        for v in values {
            f.feed(v.as_bytes());
        }
        f.value()
    }

    #[test]
    fn reformatting_does_not_change_it() {
        let a = of(&["500", "libc6 (>= 2.34), zlib1g (>= 1:1.1.4)"]);
        assert_eq!(a, of(&["500", "libc6 (>=2.34),\n zlib1g (>= 1:1.1.4)"]));
        assert_eq!(a, of(&["500", "LIBC6 (>= 0:2.34), zlib1g (>= 1:1.1.4)"]));
        assert_eq!(of(&["libfoo (<< 2)"]), of(&["libfoo (<<2)"]));
        assert_eq!(of(&["a (= 1)"]), of(&["a (1)"]));
    }

    #[test]
    fn content_changes_it() {
        let a = of(&["500", "libc6 (>= 2.34)"]);
        assert_ne!(a, of(&["501", "libc6 (>= 2.34)"]));
        assert_ne!(a, of(&["500", "libc6 (>= 2.35)"]));
        assert_eq!(of(&[]), 5381);
    }
}
