//! `parse_workflow_ref` on arbitrary text: never panics; targets are of a known kind.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let info = recorders::parse_workflow_ref(&input);
    assert!(
        info.target.is_empty()
            || info.target.starts_with("heads/")
            || info.target.starts_with("tags/")
            || info.target.starts_with("pull/")
    );
});
