//! The dpkg status parser and the package-list parser (whole and chunked) never panic, and the
//! chunked reader finds exactly what the whole-buffer parser finds.
#![no_main]

use vakt_agent::collect::software::deb::{packages, status};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = status::parse_status(&String::from_utf8_lossy(data));
    let whole = packages::parse_packages(data);
    let limits = packages::Limits {
        max_paragraph: 1 << 20,
        max_total: 1 << 30,
    };
    let chunked = packages::read_packages(data, limits);
    if let (Ok(w), Ok(c)) = (whole, chunked) {
        assert!(w.iter().eq(c.iter()), "chunked and whole parsing disagree");
        for o in w.iter() {
            assert!(w.offers(o.name).any(|x| x == o), "an offer is not found by its name");
        }
    }
});
