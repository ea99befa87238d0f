//! Flatpak's key files (repo/config, installations.d) never panic the parsers.
#![no_main]

use vakt_agent::collect::software::flatpak;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = flatpak::parse_installations_conf(&text);
    if let Ok(remotes) = flatpak::parse_remotes(&text) {
        for (name, r) in &remotes {
            let _ = flatpak::classify(name, Some(r));
        }
    }
});
