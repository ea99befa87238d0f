//! The Sieve reader never panics (nor overflows its stack) on any text; a script that does not
//! parse yields no redirect.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = vakt_agent::collect::mail::sieve::read_script(&text);
    if !parsed.problems.is_empty() {
        assert!(parsed.value.redirects.is_empty());
    }
});
