//! Which server a simulated agent turns to when its server fails, as the real agent does
//! (`vakt_agent::link::Servers` and `daemon::fail_over`): it stays with a server while it
//! answers; when its stream ends or a report fails for a reason retrying may fix, it tries
//! another server chosen at random, then the ones after it, the failed one last, each once
//! (`vakt_agent::link::fail_over_order`, the agent's own rule), and holds its stream on the
//! first that answers at once. Only when none answers does it wait,
//! with the agent's jittered backoff. With one server nothing moves: the connection re-dials
//! that server by itself.
//!
//! Pure: the simulator's stream and report tasks run side by side (the real agent runs both
//! in one loop), so both may see the same dead server; the one that comes second finds the
//! agent already moved and uses that connection, instead of dialling again and cutting off
//! the stream just opened on it.

/// What to do after the server at index `failed` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// One server only: stay, and retry after the backoff.
    Stay,
    /// The agent already left `failed` (the other task moved it): use the current server now.
    AlreadyMoved,
    /// Dial these servers in this order; the first that answers becomes the agent's server.
    Try(Vec<usize>),
}

/// The choice after the server at `failed` failed, for an agent now with server `current`,
/// out of `n` servers.
pub fn after_failure(current: usize, failed: usize, n: usize) -> Next {
    if n < 2 {
        return Next::Stay;
    }
    if current != failed {
        return Next::AlreadyMoved;
    }
    Next::Try(vakt_agent::link::fail_over_order(failed, n))
}

/// Whether a failed call is one the real agent fails over for (`LinkError::is_transient`:
/// anything but a refusal, which another replica of the same database would refuse too).
/// `None` is a failure without a status (a timeout, a connection that never opened).
pub fn worth_moving(code: Option<tonic::Code>) -> bool {
    !matches!(
        code,
        Some(
            tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_never_moves() {
        assert_eq!(after_failure(0, 0, 1), Next::Stay);
        assert_eq!(after_failure(0, 0, 0), Next::Stay);
    }

    #[test]
    fn another_server_first_the_failed_one_last() {
        assert_eq!(after_failure(0, 0, 2), Next::Try(vec![1, 0]));
        assert_eq!(after_failure(1, 1, 2), Next::Try(vec![0, 1]));
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let Next::Try(order) = after_failure(2, 2, 4) else {
                panic!("four servers: a move");
            };
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3]);
            assert_eq!(order.last(), Some(&2));
            firsts.insert(order[0]);
        }
        // The survivors share a dead replica's agents.
        assert_eq!(firsts, [0, 1, 3].into_iter().collect());
    }

    #[test]
    fn a_second_report_of_the_same_failure_does_not_move_again() {
        // The report task moved the agent from 0 to 1; the stream on 0 then ends too.
        assert_eq!(after_failure(1, 0, 2), Next::AlreadyMoved);
        assert_eq!(after_failure(3, 2, 4), Next::AlreadyMoved);
    }

    #[test]
    fn refusals_stay_everything_else_moves() {
        assert!(worth_moving(None));
        assert!(worth_moving(Some(tonic::Code::Unavailable)));
        assert!(worth_moving(Some(tonic::Code::Unknown)));
        assert!(worth_moving(Some(tonic::Code::ResourceExhausted)));
        assert!(!worth_moving(Some(tonic::Code::Unauthenticated)));
        assert!(!worth_moving(Some(tonic::Code::PermissionDenied)));
        assert!(!worth_moving(Some(tonic::Code::InvalidArgument)));
    }
}
