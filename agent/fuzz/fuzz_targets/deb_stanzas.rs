//! The dpkg status parser and the package-list parser (whole, chunked, and limited to some
//! names) never panic and agree with each other.
#![no_main]

use std::collections::HashSet;
use vakt_agent::collect::software::deb::packages::{self, Interest};
use vakt_agent::collect::software::deb::status;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = status::parse_status(&String::from_utf8_lossy(data));
    let Ok(whole) = packages::parse_packages(data, Interest::All) else {
        return;
    };
    let limits = packages::Limits {
        max_paragraph: 1 << 20,
        max_total: 1 << 30,
    };
    if let Ok(chunked) = packages::read_packages(data, limits, Interest::All) {
        assert!(whole.iter().eq(chunked.iter()), "chunked and whole parsing disagree");
    }
    for o in whole.iter() {
        assert!(whole.offers(o.name).any(|x| x == o), "an offer is not found by its name");
    }
    // Every other name: a parse limited to them finds exactly their offers.
    let names: HashSet<String> = whole
        .iter()
        .map(|o| o.name.to_string())
        .enumerate()
        .filter_map(|(i, n)| (i % 2 == 0).then_some(n))
        .collect();
    let some = packages::parse_packages(data, Interest::Names(&names)).expect("parsed once already");
    for n in &names {
        assert!(some.offers(n).eq(whole.offers(n)), "limited parse differs for {n:?}");
    }
    assert!(some.iter().all(|o| names.contains(o.name)));
});
