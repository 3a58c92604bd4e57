//! The scale set as the Actions service describes it, for a preflight check that reads
//! without creating a message session (which would conflict with a running listener).

use http::Method;
use serde::Deserialize;

use crate::client::{ActionsClient, service_error};
use crate::error::Error;

/// A runner scale set (`GET _apis/runtime/runnerscalesets/{id}`); only what a check reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerScaleSet {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub runner_group_id: i64,
    #[serde(default)]
    pub runner_group_name: String,
}

impl ActionsClient {
    /// Fetch a registration token and discard it: proves GitHub is reachable and accepts
    /// the credentials, one step before [`ActionsClient::connect`] uses them.
    pub async fn check_registration_token(&self) -> Result<(), Error> {
        self.registration_token().await.map(drop)
    }

    /// The scale set `id`; [`Error::NotFound`] when the service has none by that id.
    pub async fn get_runner_scale_set(&self, id: i64) -> Result<RunnerScaleSet, Error> {
        let path = format!("/_apis/runtime/runnerscalesets/{id}");
        let (req, resp) = self.admin_call(Method::GET, &path, None).await?;
        if !resp.is_success() {
            return Err(service_error(resp.api_error(&req)));
        }
        resp.json(&req)
    }
}
