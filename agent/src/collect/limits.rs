//! What one report may carry, whatever the users of the laptop put in their homes: errors
//! folded so a thousand copies of one problem cost a few lines, a cap on any one user's
//! programs, and a cap on the encoded report, so a report always fits well under the
//! server's limit (16 MiB) and the other users' facts still arrive. Everything left out is
//! said in the report's errors. Pure: a report in, a smaller report out.

use std::collections::{HashMap, HashSet};
use vakt_proto::model::{CollectorError, Package, Report, SectionKind};

/// Errors kept from one source (one file) before the rest are counted.
pub const MAX_ERRORS_PER_SOURCE: usize = 10;
/// Errors kept of one kind (the same message but for paths and numbers) across sources.
pub const MAX_ERRORS_PER_KIND: usize = 10;
/// Errors kept per section.
pub const MAX_ERRORS_PER_SECTION: usize = 200;
/// Characters kept of an error's source and of its message (a user's file can quote a
/// megabyte into a message).
pub const MAX_ERROR_CHARS: usize = 500;
/// Programs reported per user (in their home: `~/.local/bin`, per-user flatpaks...).
pub const MAX_USER_PACKAGES: usize = 500;
/// The encoded report's size limit: an eighth of the server's, and far above a real laptop's
/// report (a Debian desktop with 3,000 packages encodes to about 400 KB).
pub const MAX_REPORT_BYTES: usize = 2 << 20;

/// `39990` as `39,990`, for counts in messages.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `s` cut at `max` characters, with an ellipsis when cut.
fn clip(s: &mut String, max: usize) {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
        s.push('…');
    }
}

/// The kind of a message: the same words, with paths and numbers blanked, so "profile
/// directory /home/eve/.thunderbird/p17 is missing" and "... p18 ..." are one kind.
fn kind_of(message: &str) -> String {
    message
        .split_whitespace()
        .map(|w| {
            if w.contains('/') {
                "<path>".to_string()
            } else {
                let mut out = String::with_capacity(w.len());
                for c in w.chars() {
                    if c.is_ascii_digit() {
                        if !out.ends_with('#') {
                            out.push('#');
                        }
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Folds errors, in one pass each and in their order: exact repeats dropped; at most
/// [`MAX_ERRORS_PER_SOURCE`] per source and [`MAX_ERRORS_PER_KIND`] per kind, then one entry
/// saying how many more there were; at most [`MAX_ERRORS_PER_SECTION`] per section.
pub fn fold_errors(errors: Vec<CollectorError>) -> Vec<CollectorError> {
    let mut seen: HashSet<(SectionKind, String, String)> = HashSet::new();
    let mut per_source: HashMap<(SectionKind, String), usize> = HashMap::new();
    let mut per_kind: HashMap<(SectionKind, String), usize> = HashMap::new();
    let mut kept = Vec::new();
    // Summaries in order of first appearance: (section, source, count, example).
    let mut source_more: Vec<((SectionKind, String), usize)> = Vec::new();
    let mut source_more_at: HashMap<(SectionKind, String), usize> = HashMap::new();
    let mut kind_more: Vec<(CollectorError, usize)> = Vec::new();
    let mut kind_more_at: HashMap<(SectionKind, String), usize> = HashMap::new();
    for mut e in errors {
        clip(&mut e.source, MAX_ERROR_CHARS);
        clip(&mut e.message, MAX_ERROR_CHARS);
        if !seen.insert((e.section, e.source.clone(), e.message.clone())) {
            continue;
        }
        let source_key = (e.section, e.source.clone());
        let n = per_source.entry(source_key.clone()).or_default();
        *n += 1;
        if *n > MAX_ERRORS_PER_SOURCE {
            let at = *source_more_at.entry(source_key.clone()).or_insert_with(|| {
                source_more.push((source_key, 0));
                source_more.len() - 1
            });
            source_more[at].1 += 1;
            continue;
        }
        let kind_key = (e.section, kind_of(&e.message));
        let n = per_kind.entry(kind_key.clone()).or_default();
        *n += 1;
        if *n > MAX_ERRORS_PER_KIND {
            let at = *kind_more_at.entry(kind_key).or_insert_with(|| {
                kind_more.push((e.clone(), 0));
                kind_more.len() - 1
            });
            kind_more[at].1 += 1;
            continue;
        }
        kept.push(e);
    }
    for ((section, source), n) in source_more {
        kept.push(CollectorError {
            section,
            source,
            message: format!("and {} more errors from this source", thousands(n)),
        });
    }
    for (example, n) in kind_more {
        kept.push(CollectorError {
            section: example.section,
            source: example.source,
            message: format!(
                "and {} more like it elsewhere: {}",
                thousands(n),
                example.message
            ),
        });
    }
    cap_per_section(kept, MAX_ERRORS_PER_SECTION)
}

/// At most `max` errors per section, then one saying how many were left out.
fn cap_per_section(errors: Vec<CollectorError>, max: usize) -> Vec<CollectorError> {
    let mut count: HashMap<SectionKind, usize> = HashMap::new();
    let mut out = Vec::with_capacity(errors.len().min(max * SectionKind::ALL.len()));
    for e in errors {
        let n = count.entry(e.section).or_default();
        *n += 1;
        if *n <= max {
            out.push(e);
        }
    }
    for section in SectionKind::ALL {
        let n = count.get(&section).copied().unwrap_or(0);
        if n > max {
            out.push(CollectorError {
                section,
                source: "report".into(),
                message: format!(
                    "and {} more {} errors not listed",
                    thousands(n - max),
                    section.as_str()
                ),
            });
        }
    }
    out
}

/// Keeps at most [`MAX_USER_PACKAGES`] programs per user (in the list's order) and says how
/// many of each user's were left out. System packages (no user) are never cut here.
pub fn cap_user_packages(packages: &mut Vec<Package>, errors: &mut Vec<CollectorError>) {
    let mut count: HashMap<String, usize> = HashMap::new();
    packages.retain(|p| {
        if p.user.is_empty() {
            return true;
        }
        let n = count.entry(p.user.clone()).or_default();
        *n += 1;
        *n <= MAX_USER_PACKAGES
    });
    let mut over: Vec<(String, usize)> = count
        .into_iter()
        .filter(|(_, n)| *n > MAX_USER_PACKAGES)
        .collect();
    over.sort();
    for (user, n) in over {
        errors.push(CollectorError {
            section: SectionKind::Software,
            source: format!("user {user}"),
            message: format!(
                "{} more programs in this user's home not listed (at most {MAX_USER_PACKAGES} per user)",
                thousands(n - MAX_USER_PACKAGES)
            ),
        });
    }
}

/// The report's size as sent: its four sections, encoded.
pub fn encoded_len(report: &Report) -> usize {
    use prost::Message;
    vakt_proto::convert::report_to_sections(report)
        .iter()
        .map(|s| s.encoded_len())
        .sum()
}

/// A rough size of a user's item, enough to tell which user weighs most.
fn weight(fields: &[&str]) -> usize {
    fields.iter().map(|f| f.len() + 2).sum::<usize>() + 8
}

/// The user whose items in one section weigh the most, with that weight.
fn heaviest(report: &Report) -> Option<(SectionKind, String, usize)> {
    let mut w: HashMap<(SectionKind, &str), usize> = HashMap::new();
    for p in report.software.iter().filter(|p| !p.user.is_empty()) {
        *w.entry((SectionKind::Software, &p.user)).or_default() +=
            weight(&[&p.name, &p.version, &p.origin, &p.arch, &p.path, &p.user]);
    }
    let m = &report.mail;
    for a in &m.accounts {
        *w.entry((SectionKind::Mail, &a.user)).or_default() +=
            weight(&[&a.client, &a.user, &a.address, &a.host, &a.protocol]);
    }
    for f in &m.forwards {
        *w.entry((SectionKind::Mail, &f.user)).or_default() +=
            weight(&[&f.client, &f.user, &f.rule, &f.target]);
    }
    for i in &m.identities {
        *w.entry((SectionKind::Mail, &i.user)).or_default() +=
            weight(&[&i.client, &i.user, &i.address, &i.name, &i.signature]);
    }
    w.into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.1.cmp(a.0.1)))
        .map(|((s, u), n)| (s, u.to_string(), n))
}

/// Shrinks the report until it encodes to at most `max` bytes: the heaviest user's items go
/// first (one user's home is what grows a report past any real laptop's), each removal said
/// in the errors; then errors beyond a few per section; then, as a last resort, the tail of
/// the package list. Returns whether anything was left out.
pub fn fit(report: &mut Report, max: usize) -> bool {
    let mut cut = false;
    loop {
        let size = encoded_len(report);
        if size <= max {
            return cut;
        }
        cut = true;
        let why = format!(
            "left out: the report would have been {} bytes, over its {} limit",
            thousands(size),
            thousands(max)
        );
        if let Some((section, user, _)) = heaviest(report) {
            let n = drop_user(report, section, &user);
            report.errors.push(CollectorError {
                section,
                source: format!("user {user}"),
                message: format!(
                    "{} {} items of this user {why}",
                    thousands(n),
                    section.as_str()
                ),
            });
            continue;
        }
        if report.errors.len() > 4 * 20 {
            let before = report.errors.len();
            report.errors = cap_per_section(std::mem::take(&mut report.errors), 20);
            if report.errors.len() < before {
                continue;
            }
        }
        let n = report.software.len();
        if n == 0 {
            // Nothing left that could be cut: the host facts alone cannot be this large.
            return cut;
        }
        let keep = n / 2;
        report.software.truncate(keep);
        report.errors.push(CollectorError {
            section: SectionKind::Software,
            source: "report".into(),
            message: format!("{} packages {why}", thousands(n - keep)),
        });
    }
}

/// Removes a user's items from a section; how many.
fn drop_user(report: &mut Report, section: SectionKind, user: &str) -> usize {
    match section {
        SectionKind::Software => {
            let before = report.software.len();
            report.software.retain(|p| p.user != user);
            before - report.software.len()
        }
        _ => {
            let m = &mut report.mail;
            let before = m.accounts.len() + m.forwards.len() + m.identities.len();
            m.accounts.retain(|a| a.user != user);
            m.forwards.retain(|f| f.user != user);
            m.identities.retain(|i| i.user != user);
            before - (m.accounts.len() + m.forwards.len() + m.identities.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vakt_proto::model::{MailForward, PackageFormat, SoftwareSource};

    fn err(source: &str, message: &str) -> CollectorError {
        CollectorError {
            section: SectionKind::Mail,
            source: source.into(),
            message: message.into(),
        }
    }

    #[test]
    fn counts_read_with_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(39_990), "39,990");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    /// 40,000 missing profiles named by one profiles.ini: ten kept, one line for the rest.
    #[test]
    fn one_sources_flood_is_folded() {
        let ini = "/home/eve/.thunderbird/profiles.ini";
        let mut errors: Vec<CollectorError> = (0..40_000)
            .map(|i| {
                err(
                    ini,
                    &format!("profile directory /home/eve/.thunderbird/p{i} is missing"),
                )
            })
            .collect();
        errors.push(err("/home/anna/.forward", "line 2: bad"));
        let got = fold_errors(errors);
        assert_eq!(got.len(), 12, "{got:#?}");
        assert_eq!(got[10].source, "/home/anna/.forward");
        assert_eq!(got[11].source, ini);
        assert_eq!(got[11].message, "and 39,990 more errors from this source");
    }

    /// The same problem in 5,000 files: ten kept, one line saying how many more like it.
    #[test]
    fn one_kinds_flood_across_sources_is_folded() {
        let errors: Vec<CollectorError> = (0..5_000)
            .map(|i| {
                err(
                    &format!("/home/eve/f{i}"),
                    "a FIFO, not a regular file: not read",
                )
            })
            .collect();
        let got = fold_errors(errors);
        assert_eq!(got.len(), 11);
        assert!(
            got[10]
                .message
                .starts_with("and 4,990 more like it elsewhere: a FIFO"),
            "{:?}",
            got[10]
        );
    }

    #[test]
    fn repeats_vanish_long_texts_are_clipped_and_sections_capped() {
        let long = "x".repeat(100_000);
        let mut errors = vec![err("/a", &long), err("/a", &long)];
        for i in 0..1000 {
            // Different words each time, so neither source nor kind folds them.
            errors.push(err(
                &format!("/s{i}"),
                &format!("problem {}", "ab".repeat(i % 300 + 1)),
            ));
        }
        let got = fold_errors(errors);
        assert!(got[0].message.chars().count() <= MAX_ERROR_CHARS + 1);
        assert_ne!(got[1].source, "/a", "the exact repeat is gone");
        assert_eq!(got.len(), MAX_ERRORS_PER_SECTION + 1);
        assert!(
            got.last()
                .unwrap()
                .message
                .contains("more mail errors not listed")
        );
    }

    fn program(user: &str, i: usize) -> Package {
        Package {
            name: format!("tool{i}"),
            version: String::new(),
            format: PackageFormat::Binary,
            source: SoftwareSource::Sideloaded,
            origin: "ELF executable".into(),
            current: true,
            arch: "x86_64".into(),
            user: user.into(),
            path: format!("/home/{user}/.local/bin/tool{i}-{}", "p".repeat(200)),
        }
    }

    #[test]
    fn one_users_programs_are_capped_and_the_cut_is_said() {
        let mut pkgs: Vec<Package> = (0..2000).map(|i| program("eve", i)).collect();
        pkgs.push(program("anna", 1));
        pkgs.push(program("", 1));
        let mut errors = Vec::new();
        cap_user_packages(&mut pkgs, &mut errors);
        assert_eq!(pkgs.len(), MAX_USER_PACKAGES + 2);
        assert!(pkgs.iter().any(|p| p.user == "anna"));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.starts_with("1,500 more programs"),
            "{errors:?}"
        );
    }

    /// A report over the limit loses the heaviest user's items, and says so; the others stay.
    #[test]
    fn fit_drops_the_heaviest_user_first() {
        let mut r = Report {
            software: (0..MAX_USER_PACKAGES).map(|i| program("eve", i)).collect(),
            ..Default::default()
        };
        r.software.push(program("anna", 1));
        r.software.push(program("", 2));
        for i in 0..3 {
            r.mail.forwards.push(MailForward {
                client: "sieve".into(),
                user: "anna".into(),
                rule: format!("r{i}"),
                enabled: true,
                target: "a@b".into(),
                kind: vakt_proto::model::ForwardKind::Redirect,
                keeps_copy: true,
                problem: String::new(),
            });
        }
        let size = encoded_len(&r);
        assert!(size > 100_000, "{size}");
        assert!(fit(&mut r, 50_000));
        assert!(encoded_len(&r) <= 50_000);
        assert!(r.software.iter().all(|p| p.user != "eve"));
        assert_eq!(r.software.len(), 2);
        assert_eq!(r.mail.forwards.len(), 3);
        assert!(
            r.errors
                .iter()
                .any(|e| e.source == "user eve" && e.message.contains("left out")),
            "{:?}",
            r.errors
        );
        // Under the limit: untouched.
        let before = r.clone();
        assert!(!fit(&mut r, MAX_REPORT_BYTES));
        assert_eq!(r, before);
    }
}
