//! Debian version comparison is a total order on any strings: reflexive, antisymmetric
//! (comparing the other way round gives the reverse) and transitive, and never panics.
#![no_main]

use std::cmp::Ordering;
use vakt_agent::collect::software::deb::version::compare_versions;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Three versions, separated by NUL bytes (missing ones are empty).
    let mut parts = text.splitn(3, '\0');
    let a = parts.next().unwrap_or("");
    let b = parts.next().unwrap_or("");
    let c = parts.next().unwrap_or("");
    for x in [a, b, c] {
        assert_eq!(compare_versions(x, x), Ordering::Equal, "{x:?} is not equal to itself");
    }
    let ab = compare_versions(a, b);
    assert_eq!(ab, compare_versions(b, a).reverse(), "{a:?} vs {b:?} not antisymmetric");
    let bc = compare_versions(b, c);
    let ac = compare_versions(a, c);
    if ab != Ordering::Greater && bc != Ordering::Greater {
        assert_ne!(ac, Ordering::Greater, "{a:?} <= {b:?} <= {c:?} but {a:?} > {c:?}");
    }
    if ab == Ordering::Equal {
        assert_eq!(ac, bc, "{a:?} == {b:?} but they compare differently with {c:?}");
    }
});
