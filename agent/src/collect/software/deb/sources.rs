//! apt's configured sources and the names of the files apt keeps for them.
//!
//! Two syntaxes (sources.list(5)): the one-line style of `sources.list` and `*.list`
//! (`deb [arch=amd64 signed-by=…] URI suite component…`) and the deb822 style of `*.sources`
//! (`Types`, `URIs`, `Suites`, `Components`, `Enabled`, `Architectures`…). Both become
//! [`SourceEntry`]s, one per URI × suite × component, as apt's `CreateItem` makes them.
//!
//! The file names follow apt-pkg exactly, since a list is found by its name: the index URI
//! (`URI dists/SUITE/COMPONENT/binary-ARCH/Packages`, or `URI SUITE Packages` for a flat
//! repository, with `pkgAcquire::URIEncode` applied to suite and file part) passed through
//! `URItoFileName` (scheme, user and password dropped, unsafe bytes `%xx`-quoted, `/` → `_`).

use super::control;

/// A `deb` source: one URI, suite and component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// The URI as apt normalises it: parsed and re-serialised, ending with `/`.
    pub uri: String,
    pub suite: String,
    /// Empty for a flat repository (a suite ending in `/`).
    pub component: String,
    pub archs: ArchFilter,
    /// Package names this source is limited to (`Include`), or excluded from it (`Exclude`).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// 1-based line of the entry (of the paragraph, for deb822) in its file.
    pub line: usize,
}

/// The architectures a source is used for: `arch=`/`Architectures` replace apt's default set,
/// `arch+=`/`-Add` add to it, `arch-=`/`-Remove` remove from it. `all` is implied unless
/// removed explicitly, as in apt's `parsePlusMinusArchOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchFilter {
    pub only: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl ArchFilter {
    /// Whether a list for `arch` belongs to this source. Without an explicit set, apt's
    /// default (the dpkg architectures) applies; every list apt fetched for the source was for
    /// one of them, so any present list is accepted.
    pub fn accepts(&self, arch: &str) -> bool {
        if self.remove.iter().any(|a| a == arch) {
            return false;
        }
        if arch == "all" {
            return true;
        }
        match &self.only {
            Some(only) => only.iter().chain(&self.add).any(|a| a == arch),
            None => true,
        }
    }
}

/// A line (or paragraph) of a sources file that apt would reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    pub line: usize,
    pub message: String,
}

impl SourceProblem {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// Parses a one-line style file (`sources.list`, `*.list`). `native_arch` replaces `$(ARCH)`.
pub fn parse_one_line(text: &str, native_arch: &str) -> (Vec<SourceEntry>, Vec<SourceProblem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = strip_comment(raw).trim_matches([' ', '\t', '\r']);
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = line.split_once([' ', '\t', '\x0b']).unwrap_or((line, ""));
        match kind {
            "deb" => match parse_deb_line(rest, native_arch, line_no) {
                Ok(mut e) => entries.append(&mut e),
                Err(m) => problems.push(SourceProblem::new(line_no, m)),
            },
            // Source packages are not installed software.
            "deb-src" => {}
            _ => problems.push(SourceProblem::new(
                line_no,
                format!("type {kind:?} is not known"),
            )),
        }
    }
    (entries, problems)
}

/// Drops a `#` comment, except inside `[options]` (apt keeps a `#` there).
fn strip_comment(line: &str) -> &str {
    let mut depth = 0i32;
    for (i, c) in line.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '#' if depth <= 0 => return &line[..i],
            _ => {}
        }
    }
    line
}

/// One option of a `[…]` block: `key=value`, `key+=value`, `key-=value`.
fn apply_option(
    key: &str,
    value: &str,
    archs: &mut ArchFilter,
    include: &mut Vec<String>,
    exclude: &mut Vec<String>,
) {
    let list = || -> Vec<String> {
        value
            .split(',')
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    };
    match key {
        "arch" => archs.only = Some(list()),
        "arch+" => archs.add = list(),
        "arch-" => archs.remove = list(),
        "include" => *include = list(),
        "exclude" => *exclude = list(),
        // signed-by, trusted, lang, target, pdiffs, by-hash, snapshot…: no effect on which
        // packages a source offers.
        _ => {}
    }
}

fn parse_deb_line(rest: &str, native_arch: &str, line: usize) -> Result<Vec<SourceEntry>, String> {
    let mut archs = ArchFilter::default();
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    let mut rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let close = after.find(']').ok_or("[option] unparsable: no closing ]")?;
        for option in after[..close].split_ascii_whitespace() {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("[option] {option:?} is not an assignment"))?;
            if key.is_empty() || value.is_empty() {
                return Err(format!("[option] {option:?} has no key or no value"));
            }
            apply_option(key, value, &mut archs, &mut include, &mut exclude);
        }
        rest = &after[close + 1..];
    }
    let mut words = QuoteWords(rest);
    let uri = words.next().ok_or("no URI")?;
    let suite = words.next().ok_or("no suite")?;
    let uri = fixup_uri(&uri, native_arch).ok_or_else(|| format!("URI {uri:?} unparsable"))?;
    let suite = suite.replace("$(ARCH)", native_arch);
    let components: Vec<String> = words.collect();
    let entry = |component: String| SourceEntry {
        uri: uri.clone(),
        suite: suite.clone(),
        component,
        archs: archs.clone(),
        include: include.clone(),
        exclude: exclude.clone(),
        line,
    };
    if suite.ends_with('/') {
        if !components.is_empty() {
            return Err("a suite ending in / (flat repository) takes no component".into());
        }
        return Ok(vec![entry(String::new())]);
    }
    if components.is_empty() {
        return Err("no component".into());
    }
    Ok(components.into_iter().map(entry).collect())
}

/// apt's `ParseQuoteWord`: whitespace-separated words where `"…"` and `[…]` may hold spaces,
/// quotes are removed and `%xx` escapes decoded.
struct QuoteWords<'a>(&'a str);

impl Iterator for QuoteWords<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let s = self
            .0
            .trim_start_matches([' ', '\t', '\r', '\n', '\x0b', '\x0c']);
        if s.is_empty() {
            self.0 = s;
            return None;
        }
        let bytes = s.as_bytes();
        let mut end = 0;
        while end < bytes.len() && !bytes[end].is_ascii_whitespace() {
            let close = match bytes[end] {
                b'"' => Some(b'"'),
                b'[' => Some(b']'),
                _ => None,
            };
            if let Some(close) = close {
                // An unterminated quote makes the word run to the end, as no word would be
                // better than a wrong one only for apt's own error message.
                end = bytes[end + 1..]
                    .iter()
                    .position(|&c| c == close)
                    .map_or(bytes.len(), |p| end + 1 + p);
            }
            end += 1;
        }
        let end = end.min(bytes.len());
        self.0 = &s[end..];
        Some(dequote(&bytes[..end], true))
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// `Enabled:` values as apt's `StringToBool` reads them; anything unknown counts as enabled,
/// since apt then keeps its default.
fn enabled(value: &str) -> bool {
    !matches!(
        value.to_ascii_lowercase().as_str(),
        "no" | "false" | "without" | "off" | "disable" | "0"
    )
}

/// Parses a deb822 style file (`*.sources`).
pub fn parse_deb822(text: &str, native_arch: &str) -> (Vec<SourceEntry>, Vec<SourceProblem>) {
    let (paragraphs, bad) = control::parse(text, true);
    let mut problems: Vec<SourceProblem> = bad
        .into_iter()
        .map(|b| SourceProblem::new(b.line, b.reason))
        .collect();
    let mut entries = Vec::new();
    for p in &paragraphs {
        match deb822_paragraph(p, native_arch) {
            Ok(mut e) => entries.append(&mut e),
            Err(m) => problems.push(SourceProblem::new(p.line, m)),
        }
    }
    (entries, problems)
}

fn deb822_paragraph(
    p: &control::Paragraph<'_>,
    native_arch: &str,
) -> Result<Vec<SourceEntry>, String> {
    let types = p.words("Types");
    if types.is_empty() {
        return Err("paragraph without Types".into());
    }
    if let Some(unknown) = types.iter().find(|t| !matches!(**t, "deb" | "deb-src")) {
        return Err(format!("type {unknown:?} is not known"));
    }
    if p.get("Enabled").is_some_and(|v| !enabled(v)) || !types.contains(&"deb") {
        return Ok(Vec::new());
    }
    let owned =
        |name: &str| -> Vec<String> { p.words(name).into_iter().map(str::to_string).collect() };
    let archs = ArchFilter {
        only: p.field("Architectures").map(|_| owned("Architectures")),
        add: owned("Architectures-Add"),
        remove: owned("Architectures-Remove"),
    };
    let include = owned("Include");
    let exclude = owned("Exclude");
    let uris = p.words("URIs");
    let suites: Vec<String> = p
        .words("Suites")
        .into_iter()
        .map(|s| s.replace("$(ARCH)", native_arch))
        .collect();
    let components = owned("Components");
    if uris.is_empty() {
        return Err("no URIs".into());
    }
    if suites.is_empty() {
        return Err("no Suites".into());
    }
    let mut out = Vec::new();
    for raw in uris {
        let uri = fixup_uri(raw, native_arch).ok_or_else(|| format!("URI {raw:?} unparsable"))?;
        for suite in &suites {
            let entry = |component: &str| SourceEntry {
                uri: uri.clone(),
                suite: suite.clone(),
                component: component.to_string(),
                archs: archs.clone(),
                include: include.clone(),
                exclude: exclude.clone(),
                line: p.line,
            };
            if suite.ends_with('/') {
                if !components.is_empty() {
                    return Err(format!("flat suite {suite:?} takes no Components"));
                }
                out.push(entry(""));
            } else {
                if components.is_empty() {
                    return Err("no Components".into());
                }
                out.extend(components.iter().map(|c| entry(c)));
            }
        }
    }
    Ok(out)
}

/// apt's `FixupURI`: must have a scheme; `$(ARCH)` is replaced; the URI is normalised by a
/// parse/serialise round trip and ends with `/`.
fn fixup_uri(uri: &str, native_arch: &str) -> Option<String> {
    if uri.is_empty() || !uri.contains(':') {
        return None;
    }
    let mut s = Uri::parse(&uri.replace("$(ARCH)", native_arch)).to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    Some(s)
}

/// A URI split the way apt-pkg's `URI::CopyFrom` splits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uri {
    pub access: String,
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u32,
    pub path: String,
}

impl Uri {
    pub fn parse(u: &str) -> Self {
        let b = u.as_bytes();
        let mut out = Uri::default();
        let first_colon = b.iter().position(|&c| c == b':').unwrap_or(b.len());
        let mut single_slash = first_colon;
        if first_colon + 3 < b.len() && b[first_colon + 1] == b'/' && b[first_colon + 2] == b'/' {
            single_slash += 3;
        }
        let mut in_bracket = false;
        while single_slash < b.len() && (b[single_slash] != b'/' || in_bracket) {
            match b[single_slash] {
                b'[' => in_bracket = true,
                b']' if in_bracket => in_bracket = false,
                _ => {}
            }
            single_slash += 1;
        }
        let single_slash = single_slash.min(b.len());
        out.access = lossy(&b[..first_colon]);
        if single_slash != b.len() {
            out.path = lossy(&b[single_slash..]);
        }
        if out.path.is_empty() {
            out.path = "/".into();
        }
        let mut start = if first_colon + 2 < b.len()
            && b[first_colon + 1] == b'/'
            && b[first_colon + 2] == b'/'
        {
            first_colon + 3
        } else {
            first_colon + 1
        };
        if start >= b.len() {
            return out;
        }
        start = start.min(single_slash);
        let from = (start + 1).min(single_slash);
        // The last '@' before the path separates user:password from the host.
        let at = b[from..single_slash]
            .iter()
            .rposition(|&c| c == b'@')
            .map(|p| from + p);
        let mut host = match at {
            None => lossy(&b[start..single_slash]),
            Some(at) => {
                let second_colon = b[from..at]
                    .iter()
                    .position(|&c| c == b':')
                    .map(|p| from + p);
                let user_end = second_colon.unwrap_or(at);
                out.user = dequote(&b[start..user_end], false);
                if let Some(c) = second_colon {
                    out.password = dequote(&b[c + 1..at], false);
                }
                lossy(&b[at + 1..single_slash])
            }
        };
        // RFC 2732 [v6 address] hosts: brackets dropped; the port comes after them.
        let mut port_end = 0;
        let mut in_bracket = false;
        let mut h = String::with_capacity(host.len());
        for c in host.chars() {
            match c {
                '[' => in_bracket = true,
                ']' if in_bracket => {
                    in_bracket = false;
                    port_end = h.len();
                }
                c => h.push(c),
            }
        }
        if in_bracket {
            return out;
        }
        host = h;
        if let Some(pos) = host.rfind(':').filter(|&p| p >= port_end) {
            out.port = atoi(&host[pos + 1..]);
            host.truncate(pos);
        }
        out.host = host;
        out
    }

    /// `scheme://host[:port]/path` without user and password and without the trailing `/`:
    /// the "site" apt prints in `apt-cache policy` (`URI::ArchiveOnly`).
    pub fn archive_only(&self) -> String {
        let mut u = self.clone();
        u.user.clear();
        u.password.clear();
        if u.path.len() > 1 && u.path.ends_with('/') {
            u.path.pop();
        } else if u.path == "/" {
            u.path.clear();
        }
        u.to_string()
    }
}

impl std::fmt::Display for Uri {
    /// apt's `URI::operator string`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.access.is_empty() {
            write!(f, "{}:", self.access)?;
        }
        if !self.host.is_empty() {
            if !self.access.is_empty() {
                f.write_str("//")?;
            }
            if !self.user.is_empty() {
                f.write_str(&quote(self.user.as_bytes(), b":/?#[]@"))?;
                if !self.password.is_empty() {
                    write!(f, ":{}", quote(self.password.as_bytes(), b":/?#[]@"))?;
                }
                f.write_str("@")?;
            }
            if !self.access.is_empty() && self.host.contains(['/', ':']) {
                write!(f, "[{}]", self.host)?;
            } else {
                f.write_str(&self.host)?;
            }
            if self.port != 0 {
                write!(f, ":{}", self.port)?;
            }
        }
        if !self.path.is_empty() {
            if !self.path.starts_with('/') {
                f.write_str("/")?;
            }
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// C's `atoi`: leading digits, 0 if none (saturating instead of overflowing).
fn atoi(s: &str) -> u32 {
    s.trim_start()
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0u32, |n, d| {
            n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
        })
}

/// apt's `DeQuoteString`: `%xx` escapes decoded; with `drop_quotes`, `"` removed as well
/// (`ParseQuoteWord`).
fn dequote(b: &[u8], drop_quotes: bool) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
                i += 3;
            }
            b'"' if drop_quotes => i += 1,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    lossy(&out)
}

/// `%xx` escapes decoded (apt's `DeQuoteString`), e.g. to read back a list file's name.
pub fn unquote(s: &str) -> String {
    dequote(s.as_bytes(), false)
}

/// apt's `QuoteString`: bytes in `bad`, `%`, controls, space and non-ASCII become `%xx`.
fn quote(s: &[u8], bad: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s {
        if bad.contains(&c) || c == b'%' || c <= 0x20 || c >= 0x7f {
            out.push_str(&format!("%{c:02x}"));
        } else {
            out.push(char::from(c));
        }
    }
    out
}

/// apt's `pkgAcquire::URIEncode` with its default `Acquire::URIEncode` set.
fn uri_encode(part: &str) -> String {
    quote(part.as_bytes(), b"+~ ")
}

/// apt's `URItoFileName`: the name under `/var/lib/apt/lists` of the file fetched from `uri`.
pub fn uri_to_file_name(uri: &str) -> String {
    let mut u = Uri::parse(uri);
    u.user.clear();
    u.password.clear();
    u.access.clear();
    quote(u.to_string().as_bytes(), b"\\|{}[]<>\"^~_=!@#$%^&*").replace('/', "_")
}

impl SourceEntry {
    /// True for a flat repository (`deb URI ./`).
    pub fn is_flat(&self) -> bool {
        self.suite.ends_with('/')
    }

    /// The URI of the directory holding `Release`/`InRelease` and the index files, with apt's
    /// encoding of the suite (`constructMetaIndexURI`).
    fn meta_index_uri(&self, file: &str) -> String {
        let base = if self.suite == "/" {
            self.uri.clone()
        } else if self.is_flat() {
            format!("{}{}", self.uri, uri_encode(&self.suite))
        } else {
            format!("{}dists/{}/", self.uri, uri_encode(&self.suite))
        };
        format!("{base}{}", uri_encode(file))
    }

    /// List-file name of this source's `Packages` index for `arch` (ignored for flat ones),
    /// without a compression extension.
    pub fn packages_file(&self, arch: &str) -> String {
        let key = if self.is_flat() {
            "Packages".to_string()
        } else {
            format!("{}/binary-{arch}/Packages", self.component)
        };
        uri_to_file_name(&self.meta_index_uri(&key))
    }

    /// For a non-flat source: the common start of the names of its `Packages` lists of every
    /// architecture (`…_dists_SUITE_COMPONENT_binary-`).
    pub fn packages_prefix(&self) -> Option<String> {
        if self.is_flat() {
            return None;
        }
        // The architecture is the last path element but one and needs no quoting, so the
        // name of any one architecture's list ends in "ARCH_Packages".
        self.packages_file("x")
            .strip_suffix("x_Packages")
            .map(str::to_string)
    }

    /// List-file names of this source's Release files, the signed one first.
    pub fn release_files(&self) -> [String; 2] {
        [
            uri_to_file_name(&self.meta_index_uri("InRelease")),
            uri_to_file_name(&self.meta_index_uri("Release")),
        ]
    }

    /// The site as `apt-cache policy` prints it (`http://deb.debian.org/debian`).
    pub fn site(&self) -> String {
        Uri::parse(&self.uri).archive_only()
    }

    /// The host, for when a repository's Release file names no origin.
    pub fn host(&self) -> String {
        Uri::parse(&self.uri).host
    }

    /// Whether `name` is taken from this source at all (`Include`/`Exclude`).
    pub fn admits(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|n| n == name))
            && !self.exclude.iter().any(|n| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_match_apt() {
        // Names as found in /var/lib/apt/lists of real machines.
        let e = |uri: &str, suite: &str, comp: &str| SourceEntry {
            uri: fixup_uri(uri, "amd64").unwrap(),
            suite: suite.into(),
            component: comp.into(),
            archs: ArchFilter::default(),
            include: vec![],
            exclude: vec![],
            line: 1,
        };
        // (URI, suite, component, architecture, list file name)
        let cases = [
            (
                "http://deb.debian.org/debian",
                "bookworm",
                "main",
                "amd64",
                "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
            ),
            (
                "https://deb.nodesource.com/node_20.x",
                "nodistro",
                "main",
                "amd64",
                "deb.nodesource.com_node%5f20.x_dists_nodistro_main_binary-amd64_Packages",
            ),
            // User and password never reach a file name; the port does.
            (
                "https://u:p%40ss@repo.example:8443/apt/",
                "stable",
                "non-free",
                "arm64",
                "repo.example:8443_apt_dists_stable_non-free_binary-arm64_Packages",
            ),
            // A flat repository.
            ("file:/srv/repo", "./", "", "amd64", "_srv_repo_._Packages"),
            // URIEncode on the suite, then URItoFileName quotes the '%' again.
            (
                "http://x.org/d",
                "a~b+c",
                "main",
                "i386",
                "x.org_d_dists_a%257eb%252bc_main_binary-i386_Packages",
            ),
            // PPA style.
            (
                "https://ppa.launchpadcontent.net/ubuntu-toolchain-r/test/ubuntu",
                "jammy",
                "main",
                "amd64",
                "ppa.launchpadcontent.net_ubuntu-toolchain-r_test_ubuntu_dists_jammy_main_binary-amd64_Packages",
            ),
        ];
        for (uri, suite, comp, arch, want) in cases {
            assert_eq!(
                e(uri, suite, comp).packages_file(arch),
                want,
                "{uri} {suite}"
            );
        }
        let d = e("http://deb.debian.org/debian", "bookworm", "main");
        assert_eq!(
            d.release_files()[0],
            "deb.debian.org_debian_dists_bookworm_InRelease"
        );
        assert_eq!(
            d.packages_prefix().unwrap(),
            "deb.debian.org_debian_dists_bookworm_main_binary-"
        );
        assert_eq!(d.site(), "http://deb.debian.org/debian");
        let p = e("https://u:p%40ss@repo.example:8443/apt/", "stable", "main");
        assert_eq!(p.site(), "https://repo.example:8443/apt");
        let f = e("file:/srv/repo", "./", "");
        assert_eq!(f.release_files()[1], "_srv_repo_._Release");
        assert_eq!(f.packages_prefix(), None);
        assert_eq!(f.site(), "file:/srv/repo");
    }

    #[test]
    fn uri_parsing_like_apt() {
        let u = Uri::parse("http://user:pw@[::1]:3142/debian/");
        assert_eq!(
            (u.access.as_str(), u.host.as_str(), u.port),
            ("http", "::1", 3142)
        );
        assert_eq!(u.user, "user");
        assert_eq!(u.password, "pw");
        assert_eq!(u.to_string(), "http://user:pw@[::1]:3142/debian/");
        assert_eq!(
            uri_to_file_name("http://[::1]:3142/debian/"),
            "::1:3142_debian_"
        );
        let c = Uri::parse("cdrom:[Debian GNU/Linux 12]/");
        assert_eq!(c.access, "cdrom");
        assert_eq!(c.path, "/");
        assert_eq!(c.host, "Debian GNU/Linux 12");
        assert_eq!(
            Uri::parse("mirror+file:/etc/apt/mirrors.txt").path,
            "/etc/apt/mirrors.txt"
        );
        assert_eq!(Uri::parse("http://host").to_string(), "http://host/");
        // Degenerate inputs do not panic.
        for s in [
            "",
            ":",
            "://",
            "a:[",
            "x://@",
            "x://a@b@c/d",
            "x://[a",
            "é:ü//",
            "h:/%",
        ] {
            let _ = Uri::parse(s).to_string();
            let _ = uri_to_file_name(s);
        }
    }

    /// (URI, suite, component, line) of each entry.
    fn summary(entries: &[SourceEntry]) -> Vec<(&str, &str, &str, usize)> {
        entries
            .iter()
            .map(|e| {
                (
                    e.uri.as_str(),
                    e.suite.as_str(),
                    e.component.as_str(),
                    e.line,
                )
            })
            .collect()
    }

    #[test]
    fn one_line_style() {
        let text = "\
# comment
deb http://deb.debian.org/debian bookworm main contrib # trailing
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/x#y.gpg] https://repo.example/apt stable main
deb [ arch+=i386 arch-=all ] http://deb.debian.org/debian-security bookworm-security main
deb http://a.example/repo ./
deb \"http://a.example/with space\" $(ARCH)/
  deb\thttp://deb.debian.org/debian\tbookworm-updates\tmain\r
rpm http://rpm.example/ x y
deb http://nocomponent.example/ stable
deb [arch] http://bad.example/ stable main
deb
deb http://a.example/ ./ main
";
        let (entries, problems) = parse_one_line(text, "amd64");
        let got = summary(&entries);
        assert_eq!(
            got,
            [
                ("http://deb.debian.org/debian/", "bookworm", "main", 2),
                ("http://deb.debian.org/debian/", "bookworm", "contrib", 2),
                ("https://repo.example/apt/", "stable", "main", 4),
                (
                    "http://deb.debian.org/debian-security/",
                    "bookworm-security",
                    "main",
                    5
                ),
                ("http://a.example/repo/", "./", "", 6),
                ("http://a.example/with space/", "amd64/", "", 7),
                (
                    "http://deb.debian.org/debian/",
                    "bookworm-updates",
                    "main",
                    8
                ),
            ]
        );
        assert_eq!(
            entries[2].archs.only,
            Some(vec!["amd64".to_string(), "arm64".to_string()])
        );
        assert!(entries[2].archs.accepts("all"));
        assert!(!entries[2].archs.accepts("i386"));
        assert!(entries[3].archs.accepts("i386"));
        assert!(!entries[3].archs.accepts("all"));
        assert!(entries[3].archs.accepts("riscv64"));
        assert_eq!(
            entries[5].packages_file("amd64"),
            "a.example_with%20space_amd64_Packages"
        );
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [9, 10, 11, 12, 13], "{problems:?}");
    }

    #[test]
    fn deb822_style() {
        let text = "\
Types: deb deb-src
# a comment inside
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
Enabled: no

Types: deb
URIs: https://one.example/ https://two.example/
Suites: ./
Architectures-Remove: i386
Include: foo bar
Exclude: baz

Types: deb-src
URIs: http://src.example/
Suites: x
Components: main

URIs: http://notypes.example/

Types: deb
URIs: http://flat.example/
Suites: ./
Components: main

Types: rpm
URIs: http://r/
";
        let (entries, problems) = parse_deb822(text, "amd64");
        let got = summary(&entries);
        assert_eq!(
            got,
            [
                ("http://deb.debian.org/debian/", "bookworm", "main", 1),
                (
                    "http://deb.debian.org/debian/",
                    "bookworm",
                    "non-free-firmware",
                    1
                ),
                (
                    "http://deb.debian.org/debian/",
                    "bookworm-updates",
                    "main",
                    1
                ),
                (
                    "http://deb.debian.org/debian/",
                    "bookworm-updates",
                    "non-free-firmware",
                    1
                ),
                ("https://one.example/", "./", "", 15),
                ("https://two.example/", "./", "", 15),
            ]
        );
        assert_eq!(entries[4].include, ["foo", "bar"]);
        assert!(entries[4].admits("foo"));
        assert!(!entries[4].admits("baz"));
        assert!(!entries[4].admits("qux"));
        assert!(!entries[4].archs.accepts("i386"));
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [27, 29, 34], "{problems:?}");
    }

    #[test]
    fn quote_words_and_comments() {
        let w: Vec<String> = QuoteWords("  a \"b c\"d [x y]z %41%4 %zz\"").collect();
        assert_eq!(w, ["a", "b cd", "[x y]z", "A%4", "%zz"]);
        assert_eq!(strip_comment("deb [a=#] x # y"), "deb [a=#] x ");
        assert!(enabled("yes") && enabled("maybe") && !enabled("No") && !enabled("0"));
    }
}
