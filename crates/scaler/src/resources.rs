//! Typed `actions.github.com/v1alpha1` resources and the merge patches the listener sends.
//!
//! Only the fields the listener reads or writes are typed; the API server keeps the rest.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{NamespaceResourceScope, Resource};
use serde::{Deserialize, Serialize};

use crate::RunnerJobStatus;
use crate::state::ScaleDecision;

pub const GROUP: &str = "actions.github.com";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "actions.github.com/v1alpha1";

/// ARC's `EphemeralRunnerSet` (as much of it as the listener needs).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct EphemeralRunnerSet {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: EphemeralRunnerSetSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct EphemeralRunnerSetSpec {
    /// Absent means 0 (Go's `omitempty`).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default, rename = "patchID")]
    pub patch_id: i32,
}

/// ARC's `EphemeralRunner`, only for its API path: the listener writes its status with a
/// merge patch and never decodes one (the patch's answer is read as text).
#[derive(Debug, Clone, Default)]
pub struct EphemeralRunner {
    pub metadata: ObjectMeta,
}

/// The job fields of an `EphemeralRunner`'s status, as the listener writes them. Empty
/// values are omitted, as the Go listener's `omitempty` tags do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralRunnerJobStatus {
    #[serde(skip_serializing_if = "is_zero")]
    pub job_request_id: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job_repository_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub workflow_run_id: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job_workflow_ref: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job_display_name: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

macro_rules! arc_resource {
    ($ty:ty, $kind:literal, $plural:literal) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(VERSION)
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(API_VERSION)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

arc_resource!(
    EphemeralRunnerSet,
    "EphemeralRunnerSet",
    "ephemeralrunnersets"
);
arc_resource!(EphemeralRunner, "EphemeralRunner", "ephemeralrunners");

/// `{"spec":{"patchID":P,"replicas":T}}`, with `"replicas":null` for 0 exactly as the Go listener
/// sends it (its merge patch from `replicas: -1` to an `omitempty` 0 is a deletion; ARC's
/// controller reads the absent field as 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScalePatch {
    pub spec: ScalePatchSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScalePatchSpec {
    #[serde(rename = "patchID")]
    pub patch_id: i32,
    pub replicas: Option<i32>,
}

impl From<ScaleDecision> for ScalePatch {
    fn from(decision: ScaleDecision) -> Self {
        Self {
            spec: ScalePatchSpec {
                patch_id: decision.patch_id,
                replicas: (decision.replicas != 0).then_some(decision.replicas),
            },
        }
    }
}

/// `{"status":{...job fields...}}` for `ephemeralrunners/{name}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerStatusPatch<'a> {
    pub status: &'a EphemeralRunnerJobStatus,
}

impl<'a> From<&'a RunnerJobStatus> for RunnerStatusPatch<'a> {
    fn from(job: &'a RunnerJobStatus) -> Self {
        Self {
            status: &job.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scale_patch_matches_the_go_listener_bytes() {
        let patch = ScalePatch::from(ScaleDecision {
            replicas: 3,
            patch_id: 7,
        });
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!({"spec":{"patchID":7,"replicas":3}})
        );
        let zero = ScalePatch::from(ScaleDecision {
            replicas: 0,
            patch_id: 0,
        });
        assert_eq!(
            serde_json::to_string(&zero).unwrap(),
            r#"{"spec":{"patchID":0,"replicas":null}}"#
        );
    }

    #[test]
    fn runner_patch_omits_empty_values() {
        let job = RunnerJobStatus {
            runner_name: "r".into(),
            status: EphemeralRunnerJobStatus {
                job_request_id: 12,
                job_repository_name: "octo/repo".into(),
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_value(RunnerStatusPatch::from(&job)).unwrap(),
            json!({"status":{"jobRequestId":12,"jobRepositoryName":"octo/repo"}})
        );
    }
}
