//! Info.plist reading (XML and binary property lists) never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vakt_agent::collect::software::macos::parse_info_plist(data);
});
