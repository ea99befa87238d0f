//! At most one log line per window for an event that can repeat without bound (a refused
//! metrics scrape, a failing count): a flood, hostile or a misconfigured scraper, must not fill
//! the log, yet the line that is written says how many were left out since the last one. Pure:
//! the time is an argument.

use std::time::{Duration, Instant};

/// One kind of event's log window.
#[derive(Debug)]
pub struct LogWindow {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogWindow {
    /// A window that lets one line through per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Notes one event at `now`. `Some(n)`: write a line now, saying that `n` events were left
    /// out since the last line; `None`: counted, not written.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if !due {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `, and N more since the last such line` for a line that left `suppressed` out; empty for 0.
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} more since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_the_count_left_out() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = LogWindow::new(s(60));
        assert_eq!(w.note(t0), Some(0), "the first is written");
        assert_eq!(w.note(t0), None);
        assert_eq!(w.note(t0 + s(30)), None);
        assert_eq!(w.note(t0 + s(59)), None);
        assert_eq!(
            w.note(t0 + s(60)),
            Some(3),
            "a window later, with the 3 left out"
        );
        assert_eq!(w.note(t0 + s(61)), None);
        assert_eq!(w.note(t0 + s(500)), Some(1));
        assert_eq!(
            w.note(t0 + s(1000)),
            Some(0),
            "a quiet window: nothing left out"
        );
        // A clock read out of order (two scrapes racing) counts as inside the window.
        assert_eq!(w.note(t0 + s(999)), None);
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(3), " (3 more since the last such line)");
    }
}
