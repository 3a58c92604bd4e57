//! `Config::from_json` on arbitrary bytes: never panics; errors are non-empty.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = listener_bin::config::Config::from_json(data) {
        assert!(!e.to_string().is_empty());
    }
});
