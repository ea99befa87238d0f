//! The prefs.js reader never panics on any bytes, and never keeps more prefs than the input
//! can hold (the shortest, `pref("",0);`, takes 11 bytes).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let parsed = vakt_agent::collect::mail::prefs::parse_prefs(data);
    assert!(parsed.value.len() * 11 <= data.len());
});
