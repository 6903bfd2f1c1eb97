//! Log lines that input can provoke, within a budget.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A budget of log lines per window: a flood of hostile requests must not flood the log (each
/// line costs I/O and log storage), while every one is still counted in the metrics.
#[derive(Debug, Default)]
pub struct LogBudget {
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl LogBudget {
    /// Lines per window.
    pub const LINES: u32 = 20;
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// Whether to log this one; `Some(n)` also says `n` lines were skipped before it.
    pub fn take(&self) -> Option<u64> {
        let mut st = self.state.lock();
        let now = Instant::now();
        if st
            .0
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW)
        {
            *st = (Some(now), 0, st.2);
        }
        if st.1 >= Self::LINES {
            st.2 += 1;
            return None;
        }
        st.1 += 1;
        Some(std::mem::take(&mut st.2))
    }
}
