//! The GVariant deploy-record reader never panics or reads out of bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vakt_agent::collect::software::flatpak::parse_deploy(data);
});
