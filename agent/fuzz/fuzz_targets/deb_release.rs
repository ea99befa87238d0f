//! Release/InRelease parsing (with the clear-signature armour) never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = vakt_agent::collect::software::deb::release::parse_release(&text);
});
