//! `software-source` (Sorsele 8.3): installed software must come from an allowed source.
//!
//! Parameters: `allowed`, the sources a package may come from (`os-vendor`,
//! `third-party-repo`, `store`, `unlisted`, `sideloaded`; INTERFACE.md defines them), default
//! `["os-vendor"]`; `allowed_origins`, origins (repository origin, remote or store, as the
//! agent reports them in `origin`) that IT manages and that are allowed whatever the source,
//! default none.
//!
//! One finding per package outside them, keyed by format, user (per-user installs) and name,
//! so an upgrade keeps the finding and removing the package resolves it. The rule's severity
//! carries the policy's meaning: for laptops the Sorsele pack makes it a `notice` (employees
//! may install software, but answer for its licence), for phones a `violation` (apps only from
//! the official stores).

use serde::{Deserialize, Serialize};
use vakt_proto::model::SoftwareSource;

use super::{Hit, Input, parse_choices};
use crate::policy::spanned::{Diags, Fields};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub allowed: Vec<SoftwareSource>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

pub(super) const KEYS: &[&str] = &["allowed", "allowed_origins"];

pub(super) const PLACEHOLDERS: &[&str] = &[
    "name",
    "version",
    "format",
    "source",
    "origin",
    "user",
    "path",
    "source_text",
];

const SOURCES: [SoftwareSource; 5] = [
    SoftwareSource::OsVendor,
    SoftwareSource::ThirdPartyRepo,
    SoftwareSource::Store,
    SoftwareSource::Unlisted,
    SoftwareSource::Sideloaded,
];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    let allowed = match f.strings("allowed", false, d) {
        Some(list) => {
            let choices: Vec<(&str, SoftwareSource)> =
                SOURCES.iter().map(|s| (s.as_str(), *s)).collect();
            parse_choices(list.get_ref(), "allowed", &choices, d)
        }
        None => Some(vec![SoftwareSource::OsVendor]),
    };
    let allowed_origins = f
        .strings("allowed_origins", false, d)
        .map(|l| l.into_inner().into_iter().map(|s| s.into_inner()).collect())
        .unwrap_or_default();
    Some(Params {
        allowed: allowed?,
        allowed_origins,
    })
}

/// How a message names a source, in Swedish and English.
fn describe(source: SoftwareSource) -> (&'static str, &'static str) {
    match source {
        SoftwareSource::OsVendor => (
            "operativsystemets förråd",
            "the operating system's repository",
        ),
        SoftwareSource::ThirdPartyRepo => {
            ("ett förråd från tredje part", "a third-party repository")
        }
        SoftwareSource::Store => ("en appbutik", "an app store"),
        SoftwareSource::Unlisted => (
            "ett paket som inget konfigurerat förråd erbjuder",
            "a package no configured repository offers",
        ),
        SoftwareSource::Sideloaded => (
            "en installation utanför pakethanteraren",
            "an installation outside the package manager",
        ),
    }
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    input
        .report
        .software
        .iter()
        .filter(|pkg| !p.allowed.contains(&pkg.source))
        .filter(|pkg| !p.allowed_origins.iter().any(|o| o == &pkg.origin))
        .map(|pkg| {
            let format = serde_json::to_value(pkg.format)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let (sv, en) = describe(pkg.source);
            Hit::new([format.clone(), pkg.user.clone(), pkg.name.clone()])
                .with("name", &pkg.name)
                .with("version", &pkg.version)
                .with("format", format)
                .with("source", pkg.source.as_str())
                .with("origin", &pkg.origin)
                .with("user", &pkg.user)
                .with("path", &pkg.path)
                .phrase("source_text", sv, en)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use vakt_proto::model::{Package, PackageFormat, Report};

    use crate::policy::EvaluationStatus::{Exempted, Failed};
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "software-laptop"
        kind = "software-source"
        section = "8.3"
        severity = "notice"
        devices = ["laptop"]
        message_sv = "{name} {version} kommer från {source_text} ({origin})."
        message_en = "{name} {version} comes from {source_text} ({origin})."
        [rule.params]
        allowed = ["os-vendor"]
        allowed_origins = ["Google LLC"]
    "#;

    fn pkg(name: &str, source: SoftwareSource, origin: &str) -> Package {
        Package {
            name: name.into(),
            version: "1.0".into(),
            format: PackageFormat::Deb,
            source,
            origin: origin.into(),
            current: true,
            arch: String::new(),
            user: String::new(),
            path: String::new(),
        }
    }

    use vakt_proto::model::SoftwareSource;

    fn report(pkgs: Vec<Package>) -> Report {
        Report {
            software: pkgs,
            ..Report::default()
        }
    }

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        type Case = (
            &'static str,
            Vec<Package>,
            Vec<(&'static str, crate::policy::EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            (
                "os-vendor passes",
                vec![pkg("bash", SoftwareSource::OsVendor, "Debian")],
                vec![],
            ),
            (
                "a managed origin passes",
                vec![pkg(
                    "google-chrome-stable",
                    SoftwareSource::ThirdPartyRepo,
                    "Google LLC",
                )],
                vec![],
            ),
            (
                "unlisted and sideloaded fail",
                vec![
                    pkg("nodejs", SoftwareSource::Unlisted, "NodeSource"),
                    pkg(
                        "Obsidian",
                        SoftwareSource::Sideloaded,
                        "/opt/Obsidian.AppImage",
                    ),
                ],
                vec![
                    ("software-laptop/deb//nodejs", Failed),
                    ("software-laptop/deb//Obsidian", Failed),
                ],
            ),
        ];
        for (name, pkgs, want) in cases {
            let out = run_one(&pack, &laptop(), &report(pkgs), &ctx(&[], &[], &[]));
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn message_and_evidence() {
        let pack = pack_with(RULE);
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![pkg("nodejs", SoftwareSource::Unlisted, "NodeSource")]),
            &ctx(&[], &[], &[]),
        );
        let e = &out.evaluations[0];
        assert_eq!(
            e.message_sv,
            "nodejs 1.0 kommer från ett paket som inget konfigurerat förråd erbjuder (NodeSource)."
        );
        assert_eq!(e.evidence["source"], "unlisted");
        assert_eq!(e.evidence["format"], "deb");
        assert_eq!(e.section, "8.3");
    }

    #[test]
    fn exempted_by_a_recorded_exemption() {
        let pack = pack_with(RULE);
        let ex = exemption("software-source", None);
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![pkg("nodejs", SoftwareSource::Unlisted, "NodeSource")]),
            &ctx(&[], &[], &[ex]),
        );
        assert_eq!(statuses(&out), [("software-laptop/deb//nodejs", Exempted)]);
    }

    #[test]
    fn removing_the_package_resolves() {
        let pack = pack_with(RULE);
        let bad = report(vec![pkg("nodejs", SoftwareSource::Unlisted, "NodeSource")]);
        assert_resolves(&pack, &laptop(), &bad, &report(vec![]), &ctx(&[], &[], &[]));
    }

    #[test]
    fn a_collector_error_keeps_findings_open() {
        let pack = pack_with(RULE);
        let mut broken = report(vec![]);
        broken.errors.push(vakt_proto::model::CollectorError {
            section: vakt_proto::model::SectionKind::Software,
            source: "/var/lib/dpkg/status".into(),
            message: "unreadable".into(),
        });
        let out = run_one(&pack, &laptop(), &broken, &ctx(&[], &[], &[]));
        assert!(!out.complete);
    }

    #[test]
    fn phones_are_not_covered_by_a_laptop_rule() {
        let pack = pack_with(RULE);
        let out = crate::policy::evaluate(
            &pack,
            &phone(),
            &report(vec![pkg("x", SoftwareSource::Sideloaded, "")]),
            &ctx(&[], &[], &[]),
            NOW,
        );
        assert!(out.is_empty());
    }
}
