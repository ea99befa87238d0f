//! The msgFilterRules.dat reader never panics on any bytes; a file it rejects yields no filter.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let parsed = vakt_agent::collect::mail::filters::parse_filter_rules(data);
    for f in &parsed.value {
        assert!(!(f.unparseable && f.enabled));
    }
});
