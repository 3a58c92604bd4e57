//! Property tests of the workflow-ref parser (`parse_workflow_ref`): no input panics it,
//! and refs of each kind give the Go listener's name and target.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use proptest::prelude::*;
use recorders::parse_workflow_ref;

/// A path segment or ref name: no `@`, no `/`.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,20}"
}

proptest! {
    #![proptest_config(simulator::strategies::seeded(512))]

    #[test]
    fn arbitrary_input_never_panics_and_targets_are_of_a_known_kind(input in ".{0,200}") {
        let info = parse_workflow_ref(&input);
        prop_assert!(
            info.target.is_empty()
                || info.target.starts_with("heads/")
                || info.target.starts_with("tags/")
                || info.target.starts_with("pull/"),
            "{input:?} -> {info:?}"
        );
        // Go's `path.Base` of a path of only slashes is "/": the one name with a slash.
        prop_assert!(!info.name.contains('/') || info.name == "/", "{input:?} -> {info:?}");
        if input.matches('@').count() != 1 {
            prop_assert_eq!(info.name, "");
            prop_assert_eq!(info.target, "");
        }
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_workflow_ref(&String::from_utf8_lossy(&raw));
    }

    #[test]
    fn branch_and_tag_refs(
        owner in segment(), repo in segment(), file in segment(),
        ext in prop::sample::select(vec![".yml", ".yaml"]),
        branch in prop::collection::vec(segment(), 1..4),
        tag in any::<bool>(),
    ) {
        let branch = branch.join("/");
        let kind = if tag { "tags" } else { "heads" };
        let input = format!("{owner}/{repo}/.github/workflows/{file}{ext}@refs/{kind}/{branch}");
        let info = parse_workflow_ref(&input);
        prop_assert_eq!(info.name, file);
        prop_assert_eq!(info.target, format!("{kind}/{branch}"));
    }

    #[test]
    fn pull_request_refs(owner in segment(), repo in segment(), file in segment(), number in 1u32..1_000_000) {
        let input = format!("{owner}/{repo}/.github/workflows/{file}.yml@refs/pull/{number}/merge");
        let info = parse_workflow_ref(&input);
        prop_assert_eq!(info.name, file);
        prop_assert_eq!(info.target, format!("pull/{number}"));
    }

    #[test]
    fn other_refs_keep_the_name_and_have_no_target(file in segment(), reference in "[a-z0-9/]{0,20}") {
        prop_assume!(!reference.starts_with("refs/heads/") && !reference.starts_with("refs/tags/") && !reference.starts_with("refs/pull/"));
        let workflow_ref = format!("o/r/.github/workflows/{file}.yml@{reference}");
        let info = parse_workflow_ref(&workflow_ref);
        prop_assert_eq!(info.name, file);
        prop_assert_eq!(info.target, "");
    }
}
