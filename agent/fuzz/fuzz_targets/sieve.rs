//! The Sieve reader never panics (nor overflows its stack, nor runs away in its include and
//! variable walk) on any text; a script that does not parse yields no delivery, and every
//! delivery names a target. Seed corpus: `agent/tests/fixtures/mail/rules/sieve`.
#![no_main]

use vakt_agent::collect::mail::sieve;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Every include finds the script itself: recursion, repeats and limits all get exercised.
    let reading = sieve::evaluate("fuzz.sieve", &text, &mut |name| sieve::Source::Found {
        file: format!("{name}.sieve"),
        text: text.to_string(),
    });
    if sieve::parse_script(&text).is_err() {
        assert!(reading.deliveries.is_empty());
    }
    assert!(reading.deliveries.iter().all(|d| !d.target.is_empty() || !d.problem.is_empty()));
});
