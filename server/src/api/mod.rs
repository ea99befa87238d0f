//! The gRPC services: what agents call (`agent`) and what IT calls (`admin`), over one shared
//! [`State`]. Handlers check who is calling, turn the request into store operations, and map
//! errors to gRPC statuses with messages a person can act on.

pub mod admin;
pub mod agent;
mod agent_identity;
pub mod exemption_guard;
pub mod tokens;

pub use crate::state::{Connection, REPORT_SLOTS, State, device_state_name};

/// `s` cut to at most `max` characters, with an ellipsis when cut: for quoting untrusted input
/// in a message.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// A reason given for an action (a wipe, an exemption, ending one), trimmed; refused with
/// `missing` (which says what the reason is for) when it is shorter than a few characters,
/// so that "x" or "-" does not pass for one in the audit log and the evidence.
pub(crate) fn required_reason<'a>(
    text: &'a str,
    missing: &'static str,
) -> Result<&'a str, tonic::Status> {
    let reason = text.trim();
    if reason.len() < 5 {
        return Err(tonic::Status::invalid_argument(missing));
    }
    Ok(reason)
}

/// A store failure seen by a client: internal, with the cause logged here and not sent out.
pub(crate) fn internal(e: impl std::fmt::Display) -> tonic::Status {
    tracing::error!("internal error: {e}");
    tonic::Status::internal("the server could not complete the request; see its log")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_bounds_quoted_input_on_a_char_boundary() {
        assert_eq!(super::clip("abc", 3), "abc");
        assert_eq!(super::clip("abcd", 3), "abc…");
        assert_eq!(super::clip("åäöå", 2), "åä…");
        assert_eq!(super::clip(&"x".repeat(1 << 20), 300).chars().count(), 301);
    }
}
