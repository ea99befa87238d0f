//! Both sources.list syntaxes never panic, and neither do the list-file names derived from
//! whatever entries they accept.
#![no_main]

use vakt_agent::collect::software::deb::sources;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (one, _) = sources::parse_one_line(&text, "amd64");
    let (deb822, _) = sources::parse_deb822(&text, "amd64");
    for e in one.iter().chain(&deb822) {
        let _ = e.packages_file("amd64");
        let _ = e.packages_prefix();
        let _ = e.release_files();
        let _ = e.site();
        assert!(e.uri.ends_with('/'));
    }
    let _ = sources::uri_to_file_name(&text);
});
