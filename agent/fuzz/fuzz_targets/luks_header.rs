//! LUKS1/LUKS2 header parsing never panics and never reads past what it was given, on any
//! bytes; whatever it accepts has a consistent size.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use vakt_agent::collect::storage::luks;
    if let Ok(len) = luks::header_len(data) {
        assert!(len <= luks::MAX_LUKS2_HEADER);
    }
    if let Ok(h) = luks::parse(data) {
        assert!(h.version == 1 || h.version == 2);
    }
});
