//! What keeps an enrolled laptop from flooding the server with exemption requests: each
//! granted request writes an exemption, an audit entry and a mail to a manager, so a device
//! that asked in a loop filled the store and the manager's inbox and kept itself exempted
//! forever. The checks, in the order the handler runs them: a length limit on the reason, a
//! per-device rate ([`ExemptionLimiter`], kept in `limit`), and no second exemption while one is in force.

use crate::policy::{Exemption, ExemptionSubject};
use std::time::Instant;
use tonic::Status;

/// The longest reason a laptop may give, in characters: a sentence or two for the manager.
pub const MAX_REASON_CHARS: usize = 500;
pub use crate::limit::{
    EXEMPTION_WINDOW as WINDOW, EXEMPTIONS_PER_WINDOW as MAX_PER_WINDOW, ExemptionLimiter,
};

/// The reason's length, checked before anything is written.
pub fn check_reason(reason: &str) -> Result<(), Status> {
    let n = reason.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(Status::invalid_argument(format!(
            "--reason is {n} characters; at most {MAX_REASON_CHARS}: say in a sentence which work task needs mobile data (policy 8.4)"
        )));
    }
    Ok(())
}

/// Counts a request of `device` at `now`, or refuses it when the device has made
/// [`MAX_PER_WINDOW`] within the last [`WINDOW`].
pub fn take(limiter: &ExemptionLimiter, device: &str, now: Instant) -> Result<(), Status> {
    limiter.take(device, now).map_err(|wait| {
        Status::resource_exhausted(format!(
            "this laptop has asked for {MAX_PER_WINDOW} exemptions within the last hour, the most allowed; ask again in {} minutes, or ask IT",
            wait.as_secs().div_ceil(60).max(1)
        ))
    })
}

/// The exemption for mobile data abroad in force for `device` at `now_ms`, if any, among
/// `all`: a laptop is not granted a second one on top of it.
pub fn in_force<'a>(all: &'a [Exemption], device: &str, now_ms: i64) -> Option<&'a Exemption> {
    all.iter().find(|e| {
        matches!(&e.subject, ExemptionSubject::Device(d) if d == device)
            && e.rule == "mobile-data-abroad"
            && e.from.unix_timestamp_nanos() / 1_000_000 <= i128::from(now_ms)
            && e.until
                .is_some_and(|u| u.unix_timestamp_nanos() / 1_000_000 > i128::from(now_ms))
    })
}

/// The refusal for a request while `e` is in force.
pub fn already_in_force(e: &Exemption) -> Status {
    let until = e
        .until
        .and_then(|u| {
            u.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Status::already_exists(format!(
        "this laptop already has an exemption for mobile data abroad ({}) until {until}; ask again once it has ended",
        e.id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_a_few_an_hour_and_others_are_not_affected() {
        let l = ExemptionLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_PER_WINDOW {
            take(&l, "dev-a", t0).unwrap();
        }
        let refused = take(&l, "dev-a", t0 + std::time::Duration::from_secs(60)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("59 minutes"),
            "{}",
            refused.message()
        );
        take(&l, "dev-b", t0).unwrap();
        take(&l, "dev-a", t0 + WINDOW).unwrap();
    }

    #[test]
    fn reasons_are_a_sentence_or_two() {
        check_reason(&"ä".repeat(MAX_REASON_CHARS)).unwrap();
        let long = check_reason(&"a".repeat(MAX_REASON_CHARS + 1)).unwrap_err();
        assert_eq!(long.code(), tonic::Code::InvalidArgument);
        assert!(long.message().contains("at most 500"));
    }
}
