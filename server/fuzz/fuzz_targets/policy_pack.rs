//! Policy pack checking never panics on any text, and every error it reports has a position
//! inside the text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(errors) = vakt_server::policy::check(&text) {
        assert!(!errors.is_empty());
        let lines = text.split('\n').count();
        for e in errors {
            assert!(e.line >= 1 && e.line <= lines, "{e} outside {lines} lines");
            assert!(e.column >= 1);
        }
    }
});
