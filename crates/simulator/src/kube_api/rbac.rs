//! Authorization against the Role ARC grants the listener: request paths split like the
//! API server's request-info resolver, verbs, and the `Forbidden` answers.

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::Full;
use serde_json::json;

use super::handler::status_response;
use super::store::State;
use super::{EPHEMERAL_RUNNER_SETS, EPHEMERAL_RUNNERS, GROUP, Shared};

/// A request path split the way the API server's request-info resolver does.
pub(super) struct ResourcePath<'a> {
    pub(super) group: &'a str,
    pub(super) version: &'a str,
    pub(super) namespace: Option<&'a str>,
    pub(super) resource: &'a str,
    pub(super) name: Option<&'a str>,
    pub(super) subresource: Option<&'a str>,
}

pub(super) fn parse_path(path: &str) -> Option<ResourcePath<'_>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    Some(ResourcePath {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
    })
}

pub(super) fn verb(method: &Method, has_name: bool, query: &str) -> &'static str {
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if has_name => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

pub(super) fn kind_of(resource: &str) -> &'static str {
    match resource {
        EPHEMERAL_RUNNER_SETS => "EphemeralRunnerSet",
        EPHEMERAL_RUNNERS => "EphemeralRunner",
        _ => "Unknown",
    }
}

pub(super) fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

pub(super) fn forbidden(
    shared: &Shared,
    verb: &str,
    rp: &ResourcePath<'_>,
) -> Response<Full<Bytes>> {
    let full_resource = match rp.subresource {
        Some(sub) => format!("{}/{sub}", rp.resource),
        None => rp.resource.to_owned(),
    };
    let target = match rp.name {
        Some(name) => format!("{} \"{name}\"", qualified(rp.resource, rp.group)),
        None => qualified(rp.resource, rp.group),
    };
    let scope = match rp.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let message = format!(
        "{target} is forbidden: User \"{}\" cannot {verb} resource \"{full_resource}\" in API group \"{}\" {scope}",
        shared.user(),
        rp.group
    );
    let mut details = json!({"group": rp.group, "kind": rp.resource});
    if let Some(name) = rp.name {
        details["name"] = json!(name);
    }
    status_response(403, "Forbidden", &message, Some(details))
}

pub(super) fn allowed(state: &State, shared: &Shared, verb: &str, rp: &ResourcePath<'_>) -> bool {
    if verb != "patch"
        || rp.group != GROUP
        || rp.namespace != Some(shared.namespace.as_str())
        || rp.name.is_none()
    {
        return false;
    }
    match (rp.resource, rp.subresource) {
        (EPHEMERAL_RUNNER_SETS, None) => state
            .allowed_set_name
            .as_deref()
            .is_none_or(|allowed| Some(allowed) == rp.name),
        (EPHEMERAL_RUNNERS, None) => true,
        (EPHEMERAL_RUNNERS, Some("status")) => !state.runner_status_denied,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_like_the_request_info_resolver() {
        let rp = parse_path(
            "/apis/actions.github.com/v1alpha1/namespaces/ns/ephemeralrunners/r1/status",
        )
        .unwrap();
        assert_eq!(
            (
                rp.group,
                rp.version,
                rp.namespace,
                rp.resource,
                rp.name,
                rp.subresource
            ),
            (
                "actions.github.com",
                "v1alpha1",
                Some("ns"),
                "ephemeralrunners",
                Some("r1"),
                Some("status")
            )
        );
        let rp = parse_path("/api/v1/namespaces/ns/pods").unwrap();
        assert_eq!((rp.group, rp.resource, rp.name), ("", "pods", None));
        let rp = parse_path("/api/v1/namespaces/ns").unwrap();
        assert_eq!(
            (rp.namespace, rp.resource, rp.name),
            (None, "namespaces", Some("ns"))
        );
        assert!(parse_path("/version").is_none());
    }
}
