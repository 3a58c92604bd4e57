//! Property-test strategies the workspace's parsers are tested with (feature `strategies`):
//! arbitrary JSON for "no input panics it" properties, and the one seeded configuration
//! every property test runs with.

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::Value;

/// The seed of every property test in the workspace.
const SEED: u64 = 0x5eed_ca5e;

/// `cases` cases drawn from a fixed seed: the same cases on every run, so a failure
/// reproduces and CI is deterministic (a new seed is a deliberate change here, not luck;
/// proptest's default draws a new one per run).
pub fn seeded(cases: u32) -> ProptestConfig {
    ProptestConfig {
        rng_seed: RngSeed::Fixed(SEED),
        ..ProptestConfig::with_cases(cases)
    }
}

/// Arbitrary JSON a few levels deep; object keys drawn from `keys` (say, the names a parser
/// looks for, mixed with noise), strings up to 40 characters.
pub fn any_json(keys: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
