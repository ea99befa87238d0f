//! os-release parsing never panics on any bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = vakt_agent::collect::host::parse_os_release(&text);
});
