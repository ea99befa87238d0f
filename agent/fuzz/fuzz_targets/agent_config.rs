//! The agent's TOML config parser never panics on any text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = vakt_agent::config::Config::parse(&text);
});
