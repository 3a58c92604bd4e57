//! ARC's `cmd/ghalistener/scaler/scaler_test.go` cases as data, shared by the unit tests of
//! `DesiredCountState` and the end-to-end tests against the fake API server.
#![allow(dead_code)]

/// One step of a case: set dirty (a job started/completed) then call with `count`;
/// expect `(patch_id, target, patch_seq)`.
pub type Step = (bool, i64, (i32, i32, i32));

/// The cases of ARC's `cmd/ghalistener/scaler/scaler_test.go`, step for step, one per line.
#[rustfmt::skip]
pub fn go_listener_cases() -> Vec<(&'static str, i32, i32, Vec<Step>)> {
    let max = i32::MAX;
    vec![
        // TestSetDesiredWorkerState_MinMaxDefaults
        ("defaults: init with acquired 0", 0, max, vec![(false, 0, (0, 0, 0))]),
        ("defaults: init with acquired 1", 0, max, vec![(false, 1, (0, 1, 0))]),
        ("defaults: increment patch when job done", 0, max, vec![(false, 1, (0, 1, 0)), (true, 0, (1, 0, 1))]),
        ("defaults: increment patch when called with same parameters", 0, max, vec![(false, 1, (0, 1, 0)), (false, 1, (1, 1, 1))]),
        ("defaults: acquired > 0 and completed > 0", 0, max, vec![(true, 1, (0, 1, 0))]),
        ("defaults: acquired == 0 and completed == 1", 0, max, vec![(true, 1, (0, 1, 0)), (true, 0, (1, 0, 1))]),
        // TestSetDesiredWorkerState_MinSet
        ("min 1: initial scale", 1, max, vec![(false, 0, (0, 1, 0))]),
        ("min 1: request back to min on job done", 1, max, vec![(false, 2, (0, 3, 0)), (true, 0, (1, 1, 1))]),
        ("min 1: patch 0 but sequence continues on empty batch at min", 1, max, vec![(false, 3, (0, 4, 0)), (true, 0, (1, 1, 1)), (false, 0, (0, 1, 2))]),
        // TestSetDesiredWorkerState_MaxSet
        ("max 5: initial scale", 0, 5, vec![(false, 0, (0, 0, 0))]),
        ("max 5: back to 0 on job done", 0, 5, vec![(false, 2, (0, 2, 0)), (true, 0, (1, 0, 1))]),
        ("max 5: count > max", 0, 5, vec![(false, 6, (0, 5, 0))]),
        ("max 5: count == max", 0, 5, vec![(false, 5, (0, 5, 0))]),
        ("max 5: count > max and completed > 0", 0, 5, vec![(false, 1, (0, 1, 0)), (true, 6, (1, 5, 1))]),
        ("max 5: back to 0 when count was > max", 0, 5, vec![(false, 6, (0, 5, 0)), (true, 0, (1, 0, 1))]),
        ("max 5: force 0 on empty batch at min", 0, 5, vec![(false, 3, (0, 3, 0)), (true, 0, (1, 0, 1)), (false, 0, (0, 0, 2))]),
        // TestSetDesiredWorkerState_MinMaxSet
        ("min 1 max 3: initial scale", 1, 3, vec![(false, 0, (0, 1, 0))]),
        ("min 1 max 3: to min when count == 0", 1, 3, vec![(false, 2, (0, 3, 0)), (true, 0, (1, 1, 1))]),
        ("min 1 max 3: count > max", 1, 3, vec![(false, 4, (0, 3, 0))]),
        ("min 1 max 3: count == max", 1, 3, vec![(false, 3, (0, 3, 0))]),
        ("min 1 max 3: force 0 on empty batch at min", 1, 3, vec![(false, 3, (0, 3, 0)), (true, 0, (1, 1, 1)), (false, 0, (0, 1, 2))]),
    ]
}
