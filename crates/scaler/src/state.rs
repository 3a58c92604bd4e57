//! The desired-count state machine of ARC's listener scaler, without I/O.

/// One scale decision: the replicas to write and the `patchID` that goes with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDecision {
    pub replicas: i32,
    pub patch_id: i32,
}

/// ARC's `targetRunners` / `patchSeq` / `dirty` bookkeeping.
///
/// Each call to [`DesiredCountState::next`] advances `patchSeq` (after `2^31-1` it goes to 1:
/// the Go listener resets it to 0 and then increments), computes
/// `target = min(min_runners + count, max_runners)` and uses `patchSeq` as the patch ID,
/// except 0 when nothing happened (`!dirty`), the target did not change and it equals
/// `min_runners`: patch ID 0 tells ARC's controller to force the set to that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCountState {
    min_runners: i32,
    max_runners: i32,
    target_runners: i32,
    patch_seq: i32,
    dirty: bool,
}

impl DesiredCountState {
    pub fn new(min_runners: i32, max_runners: i32) -> Self {
        Self {
            min_runners,
            max_runners,
            target_runners: -1,
            patch_seq: -1,
            dirty: false,
        }
    }

    /// A job started or completed since the last decision.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The last target (-1 before the first decision).
    pub fn target_runners(&self) -> i32 {
        self.target_runners
    }

    /// The last sequence number (-1 before the first decision).
    pub fn patch_seq(&self) -> i32 {
        self.patch_seq
    }

    /// Decides the next scale patch for `count` assigned jobs.
    ///
    /// A negative `count` (never sent by the service) counts as 0 and the sum saturates at
    /// `i32` bounds, so bad input cannot overflow; otherwise this is the Go listener's arithmetic.
    pub fn next(&mut self, count: i64) -> ScaleDecision {
        let dirty = self.dirty;
        self.dirty = false;

        if self.patch_seq == i32::MAX {
            self.patch_seq = 0;
        }
        self.patch_seq += 1;

        let wanted = i64::from(self.min_runners).saturating_add(count.max(0));
        let target = wanted.min(i64::from(self.max_runners));
        let target = i32::try_from(target).unwrap_or(i32::MAX);
        let previous = self.target_runners;
        self.target_runners = target;

        let patch_id = if !dirty && target == previous && target == self.min_runners {
            0
        } else {
            self.patch_seq
        };
        ScaleDecision {
            replicas: target,
            patch_id,
        }
    }

    /// Continues the sequence from `patch_seq` (tests of the wrap-around at `2^31-1`).
    pub fn with_patch_seq(mut self, patch_seq: i32) -> Self {
        self.patch_seq = patch_seq;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::go_listener_cases::go_listener_cases;

    #[test]
    fn matches_the_go_listener_table() {
        for (name, min, max, steps) in go_listener_cases() {
            let mut state = DesiredCountState::new(min, max);
            for (i, (dirty, count, (patch_id, target, seq))) in steps.into_iter().enumerate() {
                if dirty {
                    state.mark_dirty();
                }
                let decision = state.next(count);
                assert!(!state.is_dirty(), "{name} step {i}: dirty not cleared");
                assert_eq!(decision.patch_id, patch_id, "{name} step {i}: patchID");
                assert_eq!(decision.replicas, target, "{name} step {i}: target");
                assert_eq!(state.target_runners(), target, "{name} step {i}");
                assert_eq!(state.patch_seq(), seq, "{name} step {i}: patchSeq");
            }
        }
    }

    #[test]
    fn patch_seq_wraps_to_one_after_i32_max() {
        let mut state = DesiredCountState::new(0, 10).with_patch_seq(i32::MAX - 1);
        assert_eq!(state.next(2).patch_id, i32::MAX);
        assert_eq!(state.patch_seq(), i32::MAX);
        // The Go listener resets to 0 and increments: 0 stays reserved for "force".
        let after = state.next(3);
        assert_eq!(
            after,
            ScaleDecision {
                replicas: 3,
                patch_id: 1
            }
        );
        assert_eq!(state.next(4).patch_id, 2);
    }

    #[test]
    fn forced_patch_id_needs_unchanged_target_at_min_and_no_events() {
        let mut state = DesiredCountState::new(2, 10);
        assert_eq!(
            state.next(0),
            ScaleDecision {
                replicas: 2,
                patch_id: 0
            }
        );
        // Unchanged target at min, nothing happened: forced.
        assert_eq!(state.next(0).patch_id, 0);
        // Dirty: sequence.
        state.mark_dirty();
        assert_eq!(state.next(0).patch_id, 2);
        // Unchanged target above min: sequence.
        assert_eq!(state.next(3).patch_id, 3);
        assert_eq!(state.next(3).patch_id, 4);
    }

    #[test]
    fn bad_counts_do_not_overflow() {
        let mut state = DesiredCountState::new(1, i32::MAX);
        assert_eq!(state.next(i64::MAX).replicas, i32::MAX);
        assert_eq!(state.next(-5).replicas, 1);
        let mut state = DesiredCountState::new(0, 3);
        assert_eq!(state.next(i64::from(i32::MAX) + 10).replicas, 3);
    }
}
