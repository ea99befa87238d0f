//! apt's package lists (`/var/lib/apt/lists/*_Packages`): which versions a repository offers.
//!
//! These are the big inputs: Debian's main list is about 60 000 paragraphs and 50 MB
//! uncompressed, while a laptop has a few thousand packages installed. So this parser is a fast
//! path of its own rather than the general one in `control.rs`: it works on bytes; it reads a
//! paragraph's `Package` line (the first one in every real list) and, when the package is not
//! of interest (not installed), jumps to the paragraph's end with a SIMD search; for the others
//! it reads only the fields attribution needs (`Package`, `Version`, `Architecture` and those of
//! apt's version hash, see `fingerprint.rs`); it copies the few bytes it keeps into one arena
//! instead of a string per paragraph; and it consumes the (decompressed) list in chunks so
//! memory stays flat.

use super::fingerprint::Fingerprint;
use memchr::memmem;
use std::collections::HashSet;
use std::io::Read;

/// A byte range in [`PackageList::arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// FNV-1a hash of the name: the index key.
    hash: u64,
    name: Span,
    version: Span,
    /// Index into [`PackageList::archs`].
    arch: u16,
    fingerprint: u32,
}

/// What one list offers, indexed by package name.
#[derive(Debug, Clone, Default)]
pub struct PackageList {
    arena: String,
    /// Sorted by name hash (ties in list order), so a lookup is a binary search. Sorting by
    /// the names themselves would cost more: Debian's lists are ordered by source package,
    /// not by binary name, so a real sort is needed, and comparing u64s beats comparing
    /// strings that share long prefixes (`python3-…`).
    entries: Vec<Entry>,
    /// The distinct architectures seen (a list has one or two: its own and `all`).
    archs: Vec<String>,
    /// Paragraphs without a usable `Package` or `Version`.
    pub bad_paragraphs: usize,
}

/// One version of one package that a list offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// `all` when the paragraph had no `Architecture` field.
    pub arch: &'a str,
    /// apt's version hash of the paragraph.
    pub fingerprint: u32,
}

impl PackageList {
    /// Number of package versions offered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn text(&self, s: Span) -> &str {
        let start = s.start as usize;
        self.arena.get(start..start + s.len as usize).unwrap_or("")
    }

    fn offer(&self, e: &Entry) -> Offer<'_> {
        Offer {
            name: self.text(e.name),
            version: self.text(e.version),
            arch: self.archs.get(usize::from(e.arch)).map_or("all", |a| a),
            fingerprint: e.fingerprint,
        }
    }

    /// Every version of `name` this list offers, in list order.
    pub fn offers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Offer<'a>> + 'a {
        let hash = fnv1a(name.as_bytes());
        let first = self.entries.partition_point(|e| e.hash < hash);
        self.entries[first..]
            .iter()
            .take_while(move |e| e.hash == hash)
            .filter(move |e| self.text(e.name) == name)
            .map(|e| self.offer(e))
    }

    /// Every offer, in index order (the same for the same list).
    pub fn iter(&self) -> impl Iterator<Item = Offer<'_>> {
        self.entries.iter().map(|e| self.offer(e))
    }
}

/// Why a list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a paragraph is longer than {limit} bytes: not a package list")]
    ParagraphTooLong { limit: usize },
    #[error("more than {limit} bytes once decompressed")]
    TooLarge { limit: u64 },
    #[error("the list is too large to index")]
    ArenaFull,
}

/// Limits that keep a hostile or corrupt list from exhausting memory. The largest real lists
/// (Debian and Ubuntu main, all fields) are below 100 MB; the biggest real paragraph a few kB.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_paragraph: usize,
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_paragraph: 16 << 20,
            max_total: 2 << 30,
        }
    }
}

/// Which packages a parse keeps.
#[derive(Debug, Clone, Copy)]
pub enum Interest<'a> {
    All,
    /// Only these names (the installed packages); the other paragraphs are skipped unread.
    Names(&'a HashSet<String>),
}

impl Interest<'_> {
    fn wants(self, name: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Names(set) => std::str::from_utf8(name).is_ok_and(|n| set.contains(n)),
        }
    }
}

/// Builds a [`PackageList`] from text handed over in whole paragraphs.
#[derive(Debug)]
struct Builder<'a> {
    list: PackageList,
    interest: Interest<'a>,
}

/// The range (within `line`) of the trimmed value of a `Field: value` line whose colon is at
/// `colon`.
fn value_range(line: &[u8], colon: usize) -> (usize, usize) {
    let is_space = |c: &u8| matches!(c, b' ' | b'\t' | b'\r');
    let from = colon + 1;
    let rest = line.get(from..).unwrap_or(b"");
    let Some(lead) = rest.iter().position(|c| !is_space(c)) else {
        return (from, from);
    };
    let trail = rest
        .iter()
        .rposition(|c| !is_space(c))
        .map_or(lead, |e| e + 1);
    (from + lead, from + trail)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'))
}

/// The fields a paragraph is read for.
#[derive(Clone, Copy)]
enum Wanted {
    Package,
    Version,
    Architecture,
    /// Index into `fingerprint::FIELDS`.
    Hashed(usize),
}

/// Which wanted field a field name is, case-insensitively, without comparing it to each.
fn wanted(name: &[u8]) -> Option<Wanted> {
    let first = name.first()?.to_ascii_lowercase();
    let (field, w): (&[u8], Wanted) = match (name.len(), first) {
        (7, b'p') => (b"Package", Wanted::Package),
        (7, b'v') => (b"Version", Wanted::Version),
        (12, b'a') => (b"Architecture", Wanted::Architecture),
        (14, b'i') => (b"Installed-Size", Wanted::Hashed(0)),
        (7, b'd') => (b"Depends", Wanted::Hashed(1)),
        (11, b'p') => (b"Pre-Depends", Wanted::Hashed(2)),
        (9, b'c') => (b"Conflicts", Wanted::Hashed(3)),
        (6, b'b') => (b"Breaks", Wanted::Hashed(4)),
        (8, b'r') => (b"Replaces", Wanted::Hashed(5)),
        _ => return None,
    };
    name.eq_ignore_ascii_case(field).then_some(w)
}

/// What one paragraph held, as byte ranges of the text being parsed.
#[derive(Default)]
struct Found {
    name: Option<(usize, usize)>,
    version: Option<(usize, usize)>,
    arch: Option<(usize, usize)>,
    hashed: [Option<(usize, usize)>; 6],
}

impl<'a> Builder<'a> {
    fn new(interest: Interest<'a>) -> Self {
        Self {
            list: PackageList::default(),
            interest,
        }
    }

    fn push_str(&mut self, s: &str) -> Result<Span, ListError> {
        let start = u32::try_from(self.list.arena.len()).map_err(|_| ListError::ArenaFull)?;
        let len = u32::try_from(s.len()).map_err(|_| ListError::ArenaFull)?;
        start.checked_add(len).ok_or(ListError::ArenaFull)?;
        self.list.arena.push_str(s);
        Ok(Span { start, len })
    }

    fn arch_index(&mut self, arch: &str) -> Result<u16, ListError> {
        if let Some(i) = self.list.archs.iter().position(|a| a == arch) {
            return u16::try_from(i).map_err(|_| ListError::ArenaFull);
        }
        let i = u16::try_from(self.list.archs.len()).map_err(|_| ListError::ArenaFull)?;
        self.list.archs.push(arch.to_string());
        Ok(i)
    }

    fn add(
        &mut self,
        name: &[u8],
        version: &[u8],
        arch: &[u8],
        fingerprint: u32,
    ) -> Result<(), ListError> {
        let (Ok(name), Ok(version), Ok(arch)) = (
            std::str::from_utf8(name),
            std::str::from_utf8(version),
            std::str::from_utf8(arch),
        ) else {
            self.list.bad_paragraphs += 1;
            return Ok(());
        };
        if name.is_empty() || version.is_empty() {
            self.list.bad_paragraphs += 1;
            return Ok(());
        }
        let arch = if arch.is_empty() { "all" } else { arch };
        let entry = Entry {
            hash: fnv1a(name.as_bytes()),
            name: self.push_str(name)?,
            version: self.push_str(version)?,
            arch: self.arch_index(arch)?,
            fingerprint,
        };
        self.list.entries.push(entry);
        Ok(())
    }

    /// Parses `text`, which holds whole paragraphs (a cut may only fall between paragraphs).
    fn paragraphs(&mut self, text: &[u8]) -> Result<(), ListError> {
        // Real lists end lines with LF only. With a CR anywhere a paragraph may end in
        // "\n\r\n", which the jump does not look for, so skipping walks line by line instead.
        let can_jump = memchr::memchr(b'\r', text).is_none();
        let blank = memmem::Finder::new(b"\n\n");
        let mut pos = 0;
        while pos < text.len() {
            let mut found = Found::default();
            let mut in_paragraph = false;
            let mut skipping = false;
            // The hashed field whose continuation lines may follow.
            let mut open: Option<usize> = None;
            while pos < text.len() {
                let start = pos;
                let end = memchr::memchr(b'\n', &text[pos..]).map_or(text.len(), |i| pos + i);
                pos = (end + 1).min(text.len());
                let line = &text[start..end];
                if is_blank(line) {
                    if in_paragraph {
                        break;
                    }
                    continue;
                }
                in_paragraph = true;
                if skipping {
                    continue;
                }
                if matches!(line[0], b' ' | b'\t') {
                    if let Some(span) = open.and_then(|i| found.hashed[i].as_mut()) {
                        span.1 = end;
                    }
                    continue;
                }
                open = None;
                let Some(colon) = memchr::memchr(b':', line) else {
                    continue;
                };
                let (vs, ve) = value_range(line, colon);
                let value = Some((start + vs, start + ve));
                match wanted(&line[..colon]) {
                    Some(Wanted::Package) if found.name.is_none() => {
                        found.name = value;
                        if !self.interest.wants(&line[vs..ve]) {
                            skipping = true;
                            if can_jump {
                                // `pos` starts a line: a blank line right here ends it.
                                let from = pos.saturating_sub(1);
                                pos = blank
                                    .find(&text[from..])
                                    .map_or(text.len(), |i| from + i + 2);
                                break;
                            }
                        }
                    }
                    Some(Wanted::Version) if found.version.is_none() => found.version = value,
                    Some(Wanted::Architecture) if found.arch.is_none() => found.arch = value,
                    Some(Wanted::Hashed(i)) if found.hashed[i].is_none() => {
                        found.hashed[i] = Some((start + colon + 1, end));
                        open = Some(i);
                    }
                    _ => {}
                }
            }
            if in_paragraph && !skipping {
                let get = |r: Option<(usize, usize)>| r.map_or(&b""[..], |(s, e)| &text[s..e]);
                let mut fp = Fingerprint::default();
                for span in found.hashed {
                    fp.feed(get(span));
                }
                self.add(
                    get(found.name),
                    get(found.version),
                    get(found.arch),
                    fp.value(),
                )?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> PackageList {
        // Stable, so the versions of one name stay in list order.
        self.list.entries.sort_by_key(|e| e.hash);
        self.list
    }
}

/// 64-bit FNV-1a: a cheap, fixed hash, so the index is the same on every run. A crafted list
/// full of colliding names costs only lookup time in that list, never correctness: names are
/// compared after the hash.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Parses a whole (decompressed) list held in memory.
pub fn parse_packages(text: &[u8], interest: Interest<'_>) -> Result<PackageList, ListError> {
    let mut b = Builder::new(interest);
    b.paragraphs(text)?;
    Ok(b.finish())
}

/// Reads a (decompressed) list from `reader` in chunks, parsing whole paragraphs as they
/// arrive, so the full text is never held in memory.
pub fn read_packages(
    mut reader: impl Read,
    limits: Limits,
    interest: Interest<'_>,
) -> Result<PackageList, ListError> {
    const CHUNK: usize = 1 << 20;
    let mut b = Builder::new(interest);
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    let mut filled = 0usize;
    let mut total: u64 = 0;
    let boundary = memmem::FinderRev::new(b"\n\n");
    let boundary_crlf = memmem::FinderRev::new(b"\n\r\n");
    loop {
        if buf.len() < filled + CHUNK {
            buf.resize(filled + CHUNK, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            b.paragraphs(&buf[..filled])?;
            return Ok(b.finish());
        }
        total += n as u64;
        if total > limits.max_total {
            return Err(ListError::TooLarge {
                limit: limits.max_total,
            });
        }
        // Only the newly read bytes (plus two before them) can hold a new boundary.
        let search_from = filled.saturating_sub(2);
        filled += n;
        let window = &buf[search_from..filled];
        let cut = match boundary.rfind(window) {
            Some(i) => Some(i + 2),
            None => boundary_crlf.rfind(window).map(|i| i + 3),
        };
        match cut {
            Some(cut) => {
                let cut = search_from + cut;
                b.paragraphs(&buf[..cut])?;
                buf.copy_within(cut..filled, 0);
                filled -= cut;
            }
            None if filled > limits.max_paragraph => {
                return Err(ListError::ParagraphTooLong {
                    limit: limits.max_paragraph,
                });
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "\
Package: zsh
Version: 5.9-4+b2
Installed-Size: 2318
Maintainer: Debian Zsh Maintainers <pkg-zsh-devel@lists.alioth.debian.org>
Architecture: amd64
Description: shell with lots of features
 Package: not-a-field
Filename: pool/main/z/zsh/zsh_5.9-4+b2_amd64.deb

Package: apt
Source: apt
Version: 2.6.1
Architecture: amd64

Package: apt
Version: 2.6.2
Architecture: amd64

Package: tzdata
Version: 2025b-0+deb12u1
Architecture: all
Multi-Arch: foreign
";

    #[test]
    fn indexes_name_version_arch() {
        let l = parse_packages(LIST.as_bytes(), Interest::All).unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(l.bad_paragraphs, 0);
        let apt: Vec<_> = l.offers("apt").map(|o| o.version).collect();
        assert_eq!(apt, ["2.6.1", "2.6.2"]);
        let tz: Vec<_> = l.offers("tzdata").collect();
        assert_eq!(tz[0].arch, "all");
        assert_eq!(l.offers("zsh").next().unwrap().version, "5.9-4+b2");
        assert_eq!(l.offers("not-a-field").count(), 0);
        assert_eq!(l.offers("ap").count(), 0);
        // Every offer is in the index exactly once.
        let mut names: Vec<_> = l.iter().map(|o| o.name).collect();
        names.sort();
        assert_eq!(names, ["apt", "apt", "tzdata", "zsh"]);
    }

    #[test]
    fn only_wanted_names_are_kept() {
        let wanted: HashSet<String> = ["apt", "zsh", "missing"].map(String::from).into();
        for text in [LIST.to_string(), LIST.replace('\n', "\r\n")] {
            let l = parse_packages(text.as_bytes(), Interest::Names(&wanted)).unwrap();
            let mut got: Vec<(&str, &str)> = l.iter().map(|o| (o.name, o.version)).collect();
            got.sort();
            assert_eq!(
                got,
                [("apt", "2.6.1"), ("apt", "2.6.2"), ("zsh", "5.9-4+b2")]
            );
            assert_eq!(l.bad_paragraphs, 0);
            // The same offers as a full parse, fingerprints included.
            let all = parse_packages(text.as_bytes(), Interest::All).unwrap();
            for name in ["apt", "zsh"] {
                assert!(l.offers(name).eq(all.offers(name)), "{name}");
            }
        }
    }

    #[test]
    fn crlf_and_odd_spacing_take_the_slow_path() {
        let text = LIST
            .replace('\n', "\r\n")
            .replace("Version: 2.6.2", "version:2.6.2  ");
        let l = parse_packages(text.as_bytes(), Interest::All).unwrap();
        assert_eq!(l.len(), 4);
        let apt: Vec<_> = l.offers("apt").map(|o| o.version).collect();
        assert_eq!(apt, ["2.6.1", "2.6.2"]);
        assert_eq!(l.offers("zsh").next().unwrap().arch, "amd64");
    }

    #[test]
    fn chunked_reading_agrees_with_whole_parsing() {
        // Many paragraphs so that chunk cuts fall everywhere; a tiny reader forces short reads.
        let mut big = String::new();
        for i in 0..30_000 {
            big.push_str(&format!(
                "Package: p{i:05}\nVersion: 1.{i}\nArchitecture: amd64\nDescription: x\n y\n\n"
            ));
        }
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(self.0.len()).min(777);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let l = read_packages(Dribble(big.as_bytes()), Limits::default(), Interest::All).unwrap();
        assert_eq!(l.len(), 30_000);
        assert_eq!(l.offers("p12345").next().unwrap().version, "1.12345");
        let whole = parse_packages(big.as_bytes(), Interest::All).unwrap();
        assert!(l.iter().eq(whole.iter()));
    }

    #[test]
    fn garbage_paragraphs_are_counted_not_fatal() {
        let text =
            b"Version: 1\n\nPackage: \xff\xfe\nVersion: 1\n\nno colon\n\nPackage: ok\nVersion: 2\n";
        let l = parse_packages(text, Interest::All).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l.bad_paragraphs, 3);
    }

    #[test]
    fn limits_stop_hostile_input() {
        let limits = |max_paragraph: usize, max_total: u64| Limits {
            max_paragraph,
            max_total,
        };
        let zeros = vec![0u8; 3 << 20];
        let r = read_packages(&zeros[..], limits(1 << 20, 1 << 40), Interest::All);
        assert!(matches!(r, Err(ListError::ParagraphTooLong { .. })));
        let newlines = vec![b'\n'; 3 << 20];
        let r = read_packages(&newlines[..], limits(1 << 20, 1 << 20), Interest::All);
        assert!(matches!(r, Err(ListError::TooLarge { .. })));
        assert!(
            read_packages(&newlines[..], Limits::default(), Interest::All)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn empty_and_truncated_inputs() {
        assert!(parse_packages(b"", Interest::All).unwrap().is_empty());
        let cut = &LIST.as_bytes()[..LIST.find("Version: 2.6.2").unwrap() + 12];
        let l = parse_packages(cut, Interest::All).unwrap();
        // The last paragraph was cut inside its Version: it still counts, with what it had.
        assert_eq!(
            l.offers("apt").map(|o| o.version).collect::<Vec<_>>(),
            ["2.6.1", "2.6"]
        );
    }
}
