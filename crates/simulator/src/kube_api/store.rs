//! The object store: ARC's objects as JSON keyed by group/version/resource/namespace/name,
//! the injected faults and request log, and the minimal runner controller.

use std::collections::BTreeMap;

use rand::Rng as _;
use serde_json::{Value, json};

use super::{EPHEMERAL_RUNNER_SETS, EPHEMERAL_RUNNERS, Fault, GROUP, VERSION};
use crate::faults::FaultList;
use crate::request_log::RequestLog;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ObjectKey {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) resource: String,
    pub(super) namespace: String,
    pub(super) name: String,
}

impl ObjectKey {
    pub(super) fn arc(resource: &str, namespace: &str, name: &str) -> Self {
        Self {
            group: GROUP.to_owned(),
            version: VERSION.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) objects: BTreeMap<ObjectKey, Value>,
    pub(super) requests: RequestLog<()>,
    /// Faults matched by method and path, and the latency added to every request.
    pub(super) faults: FaultList<Fault>,
    pub(super) allowed_set_name: Option<String>,
    /// The Role lacks `patch` on `ephemeralrunners/status` (a misconfigured Role).
    pub(super) runner_status_denied: bool,
    pub(super) runner_controller: bool,
    pub(super) resource_version: u64,
}

impl State {
    pub(super) fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
}

pub(super) fn new_metadata(namespace: &str, name: &str, resource_version: &str) -> Value {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let uid = {
        let mut rng = rand::rng();
        let b: [u8; 16] = rng.random();
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]),
            u16::from_be_bytes([b[8], b[9]]),
            u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
        )
    };
    json!({
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "resourceVersion": resource_version,
        "generation": 1,
        "creationTimestamp": now,
    })
}

pub(super) fn insert_runner(state: &mut State, namespace: &str, name: &str, owner: Option<&Value>) {
    let rv = state.next_resource_version();
    let mut metadata = new_metadata(namespace, name, &rv);
    if let (Some(owner), Some(meta)) = (owner, metadata.as_object_mut()) {
        meta.insert(
            "ownerReferences".to_owned(),
            json!([{
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "kind": "EphemeralRunnerSet",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": true,
                "blockOwnerDeletion": true,
            }]),
        );
    }
    let object = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "EphemeralRunner",
        "metadata": metadata,
        "spec": {},
        "status": {"phase": "Pending", "ready": false},
    });
    state
        .objects
        .insert(ObjectKey::arc(EPHEMERAL_RUNNERS, namespace, name), object);
}

/// What ARC's EphemeralRunnerSet controller does, minimally: make the number of runners
/// named `{set}-runner-*` match `spec.replicas`, deleting idle runners (no job) first and
/// never deleting busy ones (they are removed when their job ends).
pub(super) fn reconcile_runners(state: &mut State, namespace: &str, set_name: &str) {
    let Some(set) = state
        .objects
        .get(&ObjectKey::arc(EPHEMERAL_RUNNER_SETS, namespace, set_name))
        .cloned()
    else {
        return;
    };
    let desired = set["spec"]["replicas"].as_u64().unwrap_or(0) as usize;
    let prefix = format!("{set_name}-runner-");
    let owned: Vec<(String, bool)> = state
        .objects
        .iter()
        .filter(|(k, _)| {
            k.resource == EPHEMERAL_RUNNERS
                && k.namespace == namespace
                && k.name.starts_with(&prefix)
        })
        .map(|(k, v)| (k.name.clone(), v["status"].get("jobRequestId").is_some()))
        .collect();
    if owned.len() < desired {
        for _ in owned.len()..desired {
            let suffix: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                .take(5)
                .map(char::from)
                .collect();
            insert_runner(state, namespace, &format!("{prefix}{suffix}"), Some(&set));
        }
    } else {
        let mut excess = owned.len() - desired;
        for (name, busy) in owned {
            if excess == 0 {
                break;
            }
            if !busy {
                state
                    .objects
                    .remove(&ObjectKey::arc(EPHEMERAL_RUNNERS, namespace, &name));
                excess -= 1;
            }
        }
    }
    let current = state
        .objects
        .keys()
        .filter(|k| {
            k.resource == EPHEMERAL_RUNNERS
                && k.namespace == namespace
                && k.name.starts_with(&prefix)
        })
        .count();
    if let Some(set) =
        state
            .objects
            .get_mut(&ObjectKey::arc(EPHEMERAL_RUNNER_SETS, namespace, set_name))
    {
        set["status"]["currentReplicas"] = json!(current);
    }
}
