//! AppxManifest.xml parsing never panics.
#![no_main]

use vakt_agent::collect::software::windows::{SignatureKind, appx_package, parse_appx_manifest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(m) = parse_appx_manifest(&text) {
        let _ = appx_package(&m, SignatureKind::Store, "");
    }
});
