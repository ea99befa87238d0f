//! The agent's attribution of every package installed on this machine against apt's own answer.
//!
//! `apt-cache policy PKG…` prints, per package, its version table: each version with the
//! sources (package lists) that offer it, the installed one marked `***`, and dpkg's database
//! shown as the source `/var/lib/dpkg/status`. Translated into the agent's rule, apt's answer
//! for a package is:
//! - the lists offering the installed version, when there are any (other than dpkg's database);
//! - else the lists offering any newer version (the rows above `***`: apt sorts the table
//!   newest first; a row there with the installed version string is another build of it,
//!   which apt keeps apart by its version hash, and is not newer);
//! - else nothing: the package is unlisted.
//!
//! "Same source" then means: both say unlisted, or the list the agent chose is one of the lists
//! apt names (compared by apt's own description of a list, `SITE SUITE/COMPONENT ARCH
//! Packages`). At least 99% of packages must agree; every disagreement is printed.

use std::collections::HashMap;
use std::process::Command;
use vakt_agent::collect::Root;
use vakt_agent::collect::software::deb::DebScanner;

/// One package's block of `apt-cache policy` output.
#[derive(Debug, Default)]
struct PolicyBlock {
    /// Each version row: version, installed marker, the sources listed under it.
    versions: Vec<(String, bool, Vec<String>)>,
}

const DPKG_STATUS: &str = "/var/lib/dpkg/status";

impl PolicyBlock {
    /// apt's answer in the agent's terms: the list descriptions the package belongs to (empty
    /// when unlisted), and whether a newer version is offered.
    fn answer(&self) -> (Vec<String>, bool) {
        let Some(installed) = self.versions.iter().position(|(_, star, _)| *star) else {
            return (Vec::new(), false);
        };
        let lists = |sources: &[String]| -> Vec<String> {
            sources
                .iter()
                .filter(|s| s.as_str() != DPKG_STATUS)
                .cloned()
                .collect()
        };
        let installed_version = &self.versions[installed].0;
        let newer: Vec<String> = self.versions[..installed]
            .iter()
            .filter(|(v, _, _)| v != installed_version)
            .flat_map(|(_, _, s)| lists(s))
            .collect();
        let exact = lists(&self.versions[installed].2);
        let has_newer = !newer.is_empty();
        (if exact.is_empty() { newer } else { exact }, has_newer)
    }
}

/// Parses `apt-cache policy` output (C locale) into blocks keyed by their header
/// (`name` or `name:arch`).
fn parse_policy(text: &str) -> HashMap<String, PolicyBlock> {
    let mut blocks = HashMap::new();
    let mut current: Option<(String, PolicyBlock)> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            if let Some((name, block)) = current.take() {
                blocks.insert(name, block);
            }
            current = Some((
                line.trim_end_matches(':').to_string(),
                PolicyBlock::default(),
            ));
            continue;
        }
        let Some((_, block)) = current.as_mut() else {
            continue;
        };
        // Version rows: " *** 1.2-3 500" or "     1.2-3 500"; source rows: 8 spaces, priority,
        // description.
        if let Some(rest) = line.strip_prefix(" *** ") {
            if let Some((v, _prio)) = rest.rsplit_once(' ') {
                block.versions.push((v.to_string(), true, Vec::new()));
            }
        } else if line.starts_with("     ") && !line.starts_with("        ") {
            if let Some((v, _prio)) = line.trim().rsplit_once(' ') {
                block.versions.push((v.to_string(), false, Vec::new()));
            }
        } else if line.starts_with("        ") {
            let trimmed = line.trim();
            let source = trimmed.split_once(' ').map_or(trimmed, |(_, s)| s);
            if let Some(last) = block.versions.last_mut() {
                last.2.push(source.to_string());
            }
        }
    }
    if let Some((name, block)) = current {
        blocks.insert(name, block);
    }
    blocks
}

fn apt_cache_policy(args: &[String]) -> std::io::Result<String> {
    let mut text = String::new();
    for batch in args.chunks(1500) {
        let out = Command::new("apt-cache")
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("LANGUAGE", "C")
            .arg("policy")
            .args(batch)
            .output()?;
        assert!(
            out.status.success(),
            "apt-cache policy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(text)
}

#[test]
fn attribution_matches_apt_cache_policy() {
    if let Err(e) = Command::new("apt-cache").arg("--version").output() {
        println!("SKIPPED: apt-cache cannot be run on this machine ({e}); nothing to compare with");
        return;
    }
    let root = Root::new("/");
    let scan = DebScanner::new().scan(&root);
    for e in &scan.errors {
        println!("collector error: {}: {}", e.source, e.message);
    }
    let inv = scan.value;
    assert!(
        !inv.packages.is_empty(),
        "apt-cache exists but the scan found no installed packages in {DPKG_STATUS}"
    );
    let query = inv.apt_names();
    let policy = parse_policy(&apt_cache_policy(&query).expect("apt-cache policy runs"));

    let mut same = 0usize;
    let mut mismatches = Vec::new();
    let mut current_differs = Vec::new();
    let (mut repo_count, mut unlisted_count) = (0usize, 0usize);
    for (p, q) in inv.packages.iter().zip(&query) {
        let Some(block) = policy.get(q) else {
            mismatches.push(format!("{q}: not in apt-cache policy output"));
            continue;
        };
        let (apt_lists, apt_has_newer) = block.answer();
        let ours = p.repository.map(|i| inv.repositories[i].apt_description());
        let agree = match &ours {
            None => apt_lists.is_empty(),
            Some(d) => apt_lists.contains(d),
        };
        match &ours {
            Some(_) => repo_count += 1,
            None => {
                unlisted_count += 1;
                println!(
                    "unlisted: {q} {} (origin hint {:?}, current {})",
                    p.installed.version, p.origin, p.current
                );
            }
        }
        if agree {
            same += 1;
            // `current` is compared for repository packages only: an unlisted one may be
            // judged against stale lists apt no longer reads.
            if ours.is_some() && p.current == apt_has_newer {
                current_differs.push(format!(
                    "{q} {}: agent current={}, apt offers newer={apt_has_newer}",
                    p.installed.version, p.current
                ));
            }
        } else {
            mismatches.push(format!(
                "{q} {}: agent says {} ({:?}, origin {:?}); apt says {}",
                p.installed.version,
                ours.as_deref().unwrap_or("unlisted"),
                p.source,
                p.origin,
                if apt_lists.is_empty() {
                    "unlisted".to_string()
                } else {
                    apt_lists.join(" | ")
                }
            ));
        }
    }
    let total = inv.packages.len();
    println!(
        "{same}/{total} packages attributed as apt does ({repo_count} from a repository, {unlisted_count} unlisted by the agent)"
    );
    for m in &mismatches {
        println!("MISMATCH {m}");
    }
    for c in &current_differs {
        println!("CURRENT DIFFERS {c}");
    }
    assert!(
        same * 100 >= total * 99,
        "only {same} of {total} packages agree with apt-cache policy (need 99%)"
    );
    assert!(
        current_differs.len() * 100 <= total,
        "`current` differs from apt for {} packages",
        current_differs.len()
    );
}

#[test]
fn policy_output_is_read_as_apt_prints_it() {
    // A guard on the parser above, so the comparison cannot pass by reading nothing.
    let text = "\
nodejs:
  Installed: 20.20.2-1nodesource1+repack1
  Candidate: 20.20.2-1nodesource1+repack1
  Version table:
 *** 20.20.2-1nodesource1+repack1 100
        100 /var/lib/dpkg/status
     18.20.4+dfsg-1~deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
libc6:
  Installed: 2.36-9+deb12u7
  Candidate: 2.36-9+deb12u14
  Version table:
     2.36-9+deb12u14 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
 *** 2.36-9+deb12u7 100
        100 /var/lib/dpkg/status
libfoo:i386:
  Installed: 1.0
  Candidate: 1.0
  Version table:
 *** 1.0 500
        500 http://x.org/d stable/main i386 Packages
        100 /var/lib/dpkg/status
rebuilt:
  Installed: 2.0
  Candidate: 2.0
  Version table:
     2.0 500
        500 http://x.org/d stable/main amd64 Packages
 *** 2.0 100
        100 /var/lib/dpkg/status
";
    let p = parse_policy(text);
    assert_eq!(p["nodejs"].answer(), (vec![], false));
    assert_eq!(
        p["libc6"].answer(),
        (
            vec!["http://deb.debian.org/debian bookworm/main amd64 Packages".to_string()],
            true
        )
    );
    // Another build under the installed version string is neither the installed one nor newer.
    assert_eq!(p["rebuilt"].answer(), (vec![], false));
    assert_eq!(
        p["libfoo:i386"].answer(),
        (
            vec!["http://x.org/d stable/main i386 Packages".to_string()],
            false
        )
    );
}
