//! The Exim filter reader never panics (nor overflows its stack) on any text; a filter that
//! does not parse yields no delivery, as Exim runs none of it. Seed corpus:
//! `agent/tests/fixtures/mail/rules/exim`.
#![no_main]

use vakt_agent::collect::mail::exim_filter;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let reading = exim_filter::read("f", &text, "anna", "/home/anna");
    if exim_filter::parse_filter(&text).is_err() {
        assert!(reading.deliveries.is_empty());
        assert_eq!(reading.problems.len(), 1);
    }
});
