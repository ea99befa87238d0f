//! The delivery-rule readers over scripts modelled on the upstream suites
//! (`tests/fixtures/mail/rules`): Pigeonhole's variables and include tests and the RFC 5228,
//! 5229, 5703, 6134 and 6609 examples for Sieve, the examples of Exim's filter documentation
//! for `~/.forward`. Each file is pinned to the forwards it really makes: target, kind,
//! whether a copy stays, the conditions on the way, and why the reader is unsure, if it is.
//! The same files are the seed corpora of the `sieve` and `exim_filter` fuzz targets.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use vakt_agent::collect::mail::rules::Reading;
use vakt_agent::collect::mail::{dot_forward, sieve};
use vakt_proto::model::ForwardKind::{self, *};

fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail/rules")
}

/// Reads a Sieve case: `name.sieve`, or `name/main.sieve` with its includes beside it.
fn sieve_case(name: &str) -> Reading {
    let single = rules().join(format!("sieve/{name}.sieve"));
    let (main, dir) = if single.exists() {
        (single, rules().join("sieve"))
    } else {
        let dir = rules().join(format!("sieve/{name}"));
        (dir.join("main.sieve"), dir)
    };
    let text = std::fs::read_to_string(&main).unwrap();
    sieve::evaluate(&main.display().to_string(), &text, &mut |script| {
        let path = dir.join(format!("{script}.sieve"));
        match std::fs::read_to_string(&path) {
            Ok(text) => sieve::Source::Found {
                file: path.display().to_string(),
                text,
            },
            Err(_) => sieve::Source::Missing {
                file: path.display().to_string(),
            },
        }
    })
}

fn forward_case(name: &str) -> Reading {
    let path = rules().join(format!("exim/{name}.forward"));
    let text = std::fs::read_to_string(&path).unwrap();
    dot_forward::read(&path.display().to_string(), &text, "anna", "/home/anna").1
}

/// What one forward is: target, kind, keeps a copy, conditions (joined with " / ") and the
/// start of its problem ("" when it has none).
type Row = (&'static str, ForwardKind, bool, &'static str, &'static str);

fn rows(r: &Reading) -> Vec<(String, ForwardKind, bool, String, String)> {
    r.deliveries
        .iter()
        .map(|d| {
            (
                d.target.clone(),
                d.kind,
                d.keeps_copy,
                d.conditions.join(" / "),
                d.problem.clone(),
            )
        })
        .collect()
}

fn check(name: &str, got: &Reading, want: &[Row], unsure: Option<&str>) {
    let got_rows = rows(got);
    assert_eq!(got_rows.len(), want.len(), "{name}: {got_rows:#?}");
    for (g, w) in got_rows.iter().zip(want) {
        assert_eq!(
            (g.0.as_str(), g.1, g.2, g.3.as_str()),
            (w.0, w.1, w.2, w.3),
            "{name}"
        );
        assert!(g.4.starts_with(w.4), "{name}: problem {:?}", g.4);
        assert_eq!(g.4.is_empty(), w.4.is_empty(), "{name}: problem {:?}", g.4);
    }
    let got_unsure = got.unsure.as_ref().map(|(_, p)| p.to_string());
    match (unsure, &got_unsure) {
        (None, None) => {}
        (Some(w), Some(g)) => assert!(g.contains(w), "{name}: unsure {g:?}"),
        _ => panic!("{name}: unsure {got_unsure:?}, wanted {unsure:?}"),
    }
}

#[test]
fn sieve_scripts_forward_what_pigeonhole_would() {
    let cases: Vec<(&str, Vec<Row>, Option<&str>)> = vec![
        (
            "rfc5229-set",
            vec![("anna.berg@gmail.com", Redirect, false, "", "")],
            None,
        ),
        (
            "rfc5229-modifiers",
            vec![(
                "anna.privat@gmail.com",
                Redirect,
                false,
                "if string :value \"gt\" :comparator \"i;ascii-numeric\" \"${n}\" \"5\"",
                "",
            )],
            None,
        ),
        (
            "one-pass",
            vec![(
                "${fwd}",
                Redirect,
                false,
                "",
                "\"${fwd}\" is not a mail address as written",
            )],
            None,
        ),
        (
            "branches",
            vec![
                (
                    "anna.berg@gmail.com",
                    Redirect,
                    true,
                    "if header :contains \"from\" \"chef@sorsele.se\"",
                    "",
                ),
                (
                    "anna@outlook.com",
                    Redirect,
                    true,
                    "elsif header :contains \"subject\" [\"privat\", \"personligt\"]",
                    "",
                ),
                ("arkiv@sorsele.se", Redirect, true, "else", ""),
            ],
            None,
        ),
        (
            "encoded",
            vec![
                ("anna.privat@gmail.com", Redirect, false, "", ""),
                ("a@outlook.com", Redirect, false, "", ""),
            ],
            None,
        ),
        (
            "match-variables",
            vec![(
                "${1}@gmail.com",
                Redirect,
                false,
                "if address :matches :detail \"to\" \"*\"",
                "the target is not known here: ${1} (a match variable)",
            )],
            None,
        ),
        (
            "stop",
            vec![("anna.berg@gmail.com", Redirect, false, "", "")],
            None,
        ),
        (
            "extlists",
            vec![(
                "tag:example.com,2009-05-28:familj",
                Redirect,
                false,
                "",
                "redirects to the members of the list",
            )],
            None,
        ),
        (
            "unknown-command",
            vec![("kollega@sorsele.se", Redirect, true, "", "")],
            Some("line 3: command 'forward' not understood"),
        ),
        (
            "pipe",
            vec![(
                "ticket anna",
                Pipe,
                true,
                "if header :contains \"subject\" \"ärende\"",
                "",
            )],
            None,
        ),
        (
            "syntax-error",
            vec![],
            Some("line 4: expected ';' or '{', found '}'"),
        ),
        (
            "foreverypart",
            vec![(
                "skanner@outlook.com",
                Redirect,
                false,
                "foreverypart / if header :mime :subtype \"content-type\" \"pdf\"",
                "",
            )],
            None,
        ),
        (
            "globals",
            vec![(
                "anna.berg@gmail.com",
                Redirect,
                false,
                "include \"combine\" / include \"send\"",
                "",
            )],
            None,
        ),
        (
            "rfc6609",
            vec![(
                "anna@gmail.com",
                Redirect,
                false,
                "include \"mailing_lists\" / elsif header :is \"List-Id\" \"<forening.example>\"",
                "",
            )],
            None,
        ),
        ("circular", vec![], Some("include \"a\" includes itself")),
        (
            "return",
            vec![("anna@gmail.com", Redirect, false, "include \"privat\"", "")],
            None,
        ),
        (
            "missing-optional",
            vec![("anna@gmail.com", Redirect, false, "", "")],
            None,
        ),
    ];
    for (name, want, unsure) in cases {
        check(name, &sieve_case(name), &want, unsure);
    }
}

#[test]
fn the_rfc_6609_global_include_is_said_not_read() {
    let got = sieve_case("rfc6609");
    let messages: Vec<String> = got.problems.iter().map(|(_, p)| p.to_string()).collect();
    assert_eq!(
        messages,
        vec![
            "line 4: include :global \"spam_tests\" not read: global scripts live outside the \
             user's files, what it does is unknown here"
        ]
    );
}

#[test]
fn forward_files_forward_what_exim_would() {
    let cases: Vec<(&str, Vec<Row>, Option<&str>)> = vec![
        (
            "simple",
            vec![("anna.berg@gmail.com", DotForward, false, "", "")],
            None,
        ),
        (
            "vacation-program",
            vec![("|/usr/bin/vacation \"anna\"", Pipe, true, "", "")],
            None,
        ),
        ("vacation", vec![], None),
        (
            "by-subject",
            vec![(
                "/home/anna/mail/b+p",
                File,
                false,
                "if $header_subject: contains \"budget\" or $header_subject: contains \"protokoll\"",
                "",
            )],
            None,
        ),
        (
            "weekday",
            vec![(
                "/home/anna/mail/$1",
                File,
                false,
                "if $header_subject: does not contain \"brådskande\" and $tod_full matches \"^(...),\"",
                "the target is not known here: $1",
            )],
            None,
        ),
        (
            "spam-site",
            vec![("anna.berg@outlook.com", DotForward, false, "", "")],
            None,
        ),
        (
            "suffixes",
            vec![
                (
                    "/home/anna/mail/foo",
                    File,
                    false,
                    "if $local_part_suffix is \"-foo\"",
                    "",
                ),
                (
                    "anna@gmail.com",
                    DotForward,
                    false,
                    "elif $local_part_suffix is \"-privat\"",
                    "",
                ),
            ],
            None,
        ),
        (
            "errors-to",
            vec![("jon@elsewhere.example", DotForward, false, "", "")],
            None,
        ),
        (
            "mail-return",
            vec![("anna.berg@gmail.com", DotForward, true, "if personal", "")],
            None,
        ),
        (
            "syntax-error",
            vec![],
            Some("line 6: 'esle' is not a filter command"),
        ),
        (
            "sieve-filter",
            vec![(
                "anna@gmail.com",
                Redirect,
                true,
                "if address :contains \"from\" \"kommun\"",
                "",
            )],
            None,
        ),
        (
            "addresses",
            vec![
                ("anna.berg@gmail.com", DotForward, true, "", ""),
                ("|/usr/bin/procmail", Pipe, true, "", ""),
            ],
            None,
        ),
    ];
    for (name, want, unsure) in cases {
        check(name, &forward_case(name), &want, unsure);
    }
}
