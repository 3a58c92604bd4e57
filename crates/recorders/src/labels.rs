//! Scale-set labels and workflow-ref parsing shared by the metrics and span recorders.

/// Identity of the scale set, attached to scale-set metrics and to the span resource.
/// The listener fills it from the config (`ephemeral_runner_set_name`,
/// `ephemeral_runner_set_namespace`) and from the config URL (enterprise / organization /
/// repository, empty when the URL does not name them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleSetLabels {
    pub name: String,
    pub namespace: String,
    pub enterprise: String,
    pub organization: String,
    pub repository: String,
}

/// What a `job_workflow_ref` names: parts of it, borrowed (parsed for every job).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkflowRefInfo<'a> {
    /// The workflow file name without `.yml` / `.yaml`.
    pub name: &'a str,
    /// `heads/<branch>`, `tags/<tag>`, `pull/<number>`, or empty for any other ref.
    pub target: &'a str,
}

/// Parse `owner/repo/.github/workflows/ci.yml@refs/heads/main` as the Go listener does:
/// exactly one `@`; the name is the base name of the path without `.yml`/`.yaml`
/// (even when the ref is of an unknown kind); the target keeps the ref kind.
pub fn parse_workflow_ref(workflow_ref: &str) -> WorkflowRefInfo<'_> {
    let mut info = WorkflowRefInfo::default();
    if workflow_ref.is_empty() {
        return info;
    }
    let mut parts = workflow_ref.split('@');
    let (Some(path), Some(reference), None) = (parts.next(), parts.next(), parts.next()) else {
        return info;
    };
    let file = go_path_base(path);
    let without_yml = file.strip_suffix(".yml").unwrap_or(file);
    info.name = without_yml.strip_suffix(".yaml").unwrap_or(without_yml);
    // The target is the ref without its `refs/` prefix: `heads/…` and `tags/…` whole,
    // `pull/{number}` without what follows the number.
    let Some(kind_and_name) = reference.strip_prefix("refs/") else {
        return info;
    };
    if kind_and_name.starts_with("heads/") || kind_and_name.starts_with("tags/") {
        info.target = kind_and_name;
    } else if let Some(pr) = kind_and_name.strip_prefix("pull/") {
        // refs/pull/{number}/merge → pull/{number}; a number without a following
        // segment (or an empty one) gives no target, as in the Go listener.
        if let Some(idx) = pr.find('/')
            && idx > 0
        {
            info.target = &kind_and_name[.."pull/".len() + idx];
        }
    }
    info
}

/// `parts` as one string that no other list of parts gives (each prefixed with its length),
/// written into `out`: the key of a label series, built in a reused buffer so looking up a
/// known series allocates nothing.
pub(crate) fn encode_key<'a>(parts: impl IntoIterator<Item = &'a str>, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    for part in parts {
        // Writing into a String cannot fail.
        let _ = write!(out, "{}:", part.len());
        out.push_str(part);
    }
}

/// Go's `path.Base`: "." for "", "/" for only slashes, else the last element.
fn go_path_base(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    match trimmed.rfind('/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_ref_table() {
        // (input, name, target) — the Go listener's parser behaviour, case by case.
        #[rustfmt::skip]
        let table = [
            ("owner/repo/.github/workflows/ci.yml@refs/heads/main", "ci", "heads/main"),
            ("o/r/.github/workflows/build.yaml@refs/heads/feature/x", "build", "heads/feature/x"),
            ("o/r/.github/workflows/release.yml@refs/tags/v1.2.3", "release", "tags/v1.2.3"),
            ("o/r/.github/workflows/pr.yml@refs/pull/12/merge", "pr", "pull/12"),
            ("o/r/.github/workflows/pr.yml@refs/pull/12", "pr", ""),
            ("o/r/.github/workflows/pr.yml@refs/pull//merge", "pr", ""),
            ("o/r/.github/workflows/ci.yml@0123abcd", "ci", ""),
            ("o/r/.github/workflows/ci.json@refs/heads/main", "ci.json", "heads/main"),
            ("o/r/.github/workflows/ci.yml.yaml@refs/heads/main", "ci.yml", "heads/main"),
            ("o/r/.github/workflows/ci.yml", "", ""),
            ("a@b@c", "", ""),
            ("", "", ""),
            ("@refs/heads/main", ".", "heads/main"),
            ("o/r/@refs/tags/x", "r", "tags/x"),
            // Found by the property test (CI, 2026-12-03): Go's path.Base("/") is "/".
            ("/@", "/", ""),
            ("///@refs/heads/m", "/", "heads/m"),
        ];
        for (input, name, target) in table {
            let got = parse_workflow_ref(input);
            assert_eq!((got.name, got.target), (name, target), "{input}");
        }
    }

    proptest::proptest! {
        #![proptest_config(simulator::strategies::seeded(256))]
        #[test]
        fn workflow_ref_parsing_never_panics(input in ".*") {
            let info = parse_workflow_ref(&input);
            proptest::prop_assert!(info.target.is_empty() || input.contains("@refs/"));
        }
    }
}
