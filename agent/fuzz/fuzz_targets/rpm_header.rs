//! rpm header parsing never panics and never over-allocates on any blob.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(h) = vakt_agent::collect::software::rpm::parse_header(data) {
        let _ = h.evr();
    }
});
