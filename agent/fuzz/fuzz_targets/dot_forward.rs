//! The ~/.forward reader never panics on any text, in whichever of its three grammars the
//! first line picks. Seed corpus: `agent/tests/fixtures/mail/rules/exim`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = vakt_agent::collect::mail::dot_forward::read("f", &text, "anna", "/home/anna");
});
