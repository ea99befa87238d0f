//! `profiles.ini` and `installs.ini` name Thunderbird's profile directories (a hostile home's
//! names 40,000 of them): whatever the bytes, the reader never panics, names each directory
//! once, never more than the file's sections name, and never a path with `..` left in it.
#![no_main]

use std::collections::HashSet;
use std::path::{Component, Path};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let ini = vakt_agent::collect::mail::ini::parse_ini(&text, &[';', '#']).value;
    let base = Path::new("/home/eve/.thunderbird");
    let dirs = vakt_agent::collect::mail::thunderbird::profile_dirs(base, Some(&ini), Some(&ini));
    let unique: HashSet<_> = dirs.iter().collect();
    assert_eq!(unique.len(), dirs.len(), "each directory once");
    assert!(dirs.len() <= 2 * ini.sections.len());
    for d in &dirs {
        assert!(d.is_absolute(), "{}", d.display());
        assert!(
            !d.components().any(|c| c == Component::ParentDir),
            "{}",
            d.display()
        );
    }
});
