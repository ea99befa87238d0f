//! Debian version ordering, per Debian Policy 5.6.12 (`[epoch:]upstream[-revision]`).
//!
//! Attribution hinges on "this version or a newer one", so the order must be dpkg's exactly:
//! the epoch compares numerically; upstream and revision compare by alternating non-digit runs
//! (letters sort before non-letters, `~` before everything, even the end of the string) and digit
//! runs (numerically). Any string gets a place in the order, malformed ones included, so a garbled
//! list can never make the comparison panic or contradict itself.

use std::cmp::Ordering;

/// A version split into its three parts; borrowed from the string it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebVersion<'a> {
    /// The epoch's digits, possibly with leading zeros; empty means 0.
    pub epoch: &'a str,
    pub upstream: &'a str,
    /// Empty when the version has no `-`; dpkg treats that the same as `0`.
    pub revision: &'a str,
}

impl<'a> DebVersion<'a> {
    /// Splits a version the way dpkg does: the epoch before the first `:` (only when it is all
    /// digits; otherwise the whole string is upstream, so nothing is silently dropped), the
    /// revision after the last `-`.
    pub fn parse(text: &'a str) -> Self {
        let text = text.trim();
        let (epoch, rest) = match text.split_once(':') {
            Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) => (e, rest),
            _ => ("", text),
        };
        let (upstream, revision) = match rest.rfind('-') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        Self {
            epoch,
            upstream,
            revision,
        }
    }
}

impl Ord for DebVersion<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_digits(self.epoch.as_bytes(), other.epoch.as_bytes())
            .then_with(|| compare_part(self.upstream.as_bytes(), other.upstream.as_bytes()))
            .then_with(|| compare_part(self.revision.as_bytes(), other.revision.as_bytes()))
    }
}

impl PartialOrd for DebVersion<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two version strings in Debian order. `1.0` and `0:1.0-0` are equal, as for dpkg.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    DebVersion::parse(a).cmp(&DebVersion::parse(b))
}

/// The weight of one byte of a non-digit run: `~` lowest, then the end of the run, then
/// letters, then everything else (dpkg's `order()`).
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Compares an upstream version or a revision (dpkg's `verrevcmp`).
fn compare_part(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        // The non-digit run, byte by byte; a shorter run ends with weight 0.
        loop {
            let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
            let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let (wa, wb) = (weight(ca), weight(cb));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if ca.is_some() {
                a = &a[1..];
            }
            if cb.is_some() {
                b = &b[1..];
            }
        }
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let ord = compare_digits(&a[..da], &b[..db]);
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

/// Compares two runs of ASCII digits as numbers of any length (an empty run is 0), so an epoch
/// or a date-like component wider than u64 still orders correctly.
fn compare_digits(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |d: &[u8]| -> usize { d.iter().take_while(|&&c| c == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// Each case and its mirror image: (a, b, how a compares to b).
    #[track_caller]
    fn check(cases: &[(&str, &str, Ordering)]) {
        for &(a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn policy_examples_for_tilde() {
        // Debian Policy 5.6.12: `~~` < `~~a` < `~` < (empty) < `a`.
        let sorted = ["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a"];
        for w in sorted.windows(2) {
            check(&[(w[0], w[1], Less)]);
        }
        check(&[
            ("1.0~rc1-1", "1.0-1", Less),
            ("2.30-1~bpo12+1", "2.30-1", Less),
        ]);
    }

    #[test]
    fn epochs_dominate_and_default_to_zero() {
        check(&[
            ("1:0.1", "9.9", Greater),
            ("0:1.0", "1.0", Equal),
            ("2:1.0", "10:0.1", Less),
            ("007:1", "7:1", Equal),
            // An epoch wider than any integer type still compares numerically.
            (
                "123456789012345678901234567890:1",
                "123456789012345678901234567889:9",
                Greater,
            ),
        ]);
    }

    #[test]
    fn digit_runs_compare_numerically() {
        check(&[
            ("1.10", "1.9", Greater),
            ("1.001", "1.1", Equal),
            ("1.0", "1.00", Equal),
            ("20241231", "20250101", Less),
            ("1.2.3", "1.2", Greater),
            ("1.2", "1.2.0", Less),
        ]);
    }

    #[test]
    fn letters_sort_before_other_characters() {
        check(&[
            ("1.0a", "1.0+", Less),
            ("1.0a", "1.0.", Less),
            ("1.0+", "1.0.", Less), // '+' (43) before '.' (46), both non-letters
            ("1.0Z", "1.0a", Less),
            ("1.0-a", "1.0-+", Less),
        ]);
    }

    #[test]
    fn revision_splits_at_the_last_hyphen() {
        let v = DebVersion::parse("1:2.3-rc-4ubuntu1");
        assert_eq!(
            (v.epoch, v.upstream, v.revision),
            ("1", "2.3-rc", "4ubuntu1")
        );
        check(&[
            ("1.0-1", "1.0-2", Less),
            ("1.0-10", "1.0-9", Greater),
            ("1.0", "1.0-0", Equal),
            ("1.0", "1.0-1", Less),
        ]);
    }

    #[test]
    fn real_world_pairs() {
        check(&[
            ("2.36-9+deb12u14", "2.36-9+deb12u7", Greater),
            ("18.20.4+dfsg-1~deb12u2", "18.20.4+dfsg-1~deb12u1", Greater),
            (
                "20.20.2-1nodesource1+repack1",
                "20.20.2-1nodesource1",
                Greater,
            ),
            ("20.20.2-1nodesource1", "18.20.4+dfsg-1~deb12u2", Greater),
            (
                "5:24.0.7-1~debian.12~bookworm",
                "5:24.0.7-1~debian.12",
                Less,
            ),
            ("1.2.3-1ubuntu0.1", "1.2.3-1", Greater),
            ("1.2.3-1build1", "1.2.3-1ubuntu1", Less),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
        ]);
    }

    #[test]
    fn malformed_versions_still_have_a_place() {
        // A non-numeric "epoch" is kept as part of upstream rather than dropped.
        let v = DebVersion::parse("a:1-2");
        assert_eq!((v.epoch, v.upstream, v.revision), ("", "a:1", "2"));
        check(&[
            ("", "0", Equal),
            ("", "~", Greater),
            (":1", "1", Equal),             // empty epoch digits read as 0
            ("1.0\u{e9}", "1.0z", Greater), // non-ASCII sorts as a non-letter
            (" 1.0 ", "1.0", Equal),
            ("-", "", Equal),
        ]);
    }

    #[test]
    fn order_is_consistent_on_a_grid() {
        // Every pair of a varied sample agrees with its mirror and the order is transitive.
        let sample = [
            "", "0", "1", "1.0", "1.0~", "1.0~~", "1.0-1", "1:0", "1.0a", "1.0+b1", "1.0.1",
            "01.0", "a", "~", "1.0-1~", "1:1.0-1", "2", "10", "1.0-", "1.0--1", "1.a.2",
        ];
        for a in sample {
            assert_eq!(compare_versions(a, a), Equal);
            for b in sample {
                let ab = compare_versions(a, b);
                assert_eq!(ab, compare_versions(b, a).reverse(), "{a} vs {b}");
                for c in sample {
                    if ab != Greater && compare_versions(b, c) != Greater {
                        assert_ne!(compare_versions(a, c), Greater, "{a} <= {b} <= {c}");
                    }
                }
            }
        }
    }
}
