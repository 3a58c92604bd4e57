//! `GET _apis/runtime/runnerscalesets/{id}`: the scale set, read with the admin token and
//! no session (what `ghalistener check` asks to prove the id is right).

use http::{Response, StatusCode};

use super::responses::actions_json;
use super::{Body, Call};

impl Call<'_> {
    /// The same api-version, admin-token and scale-set checks as the session calls: an
    /// unknown id is a 404 `RunnerScaleSetNotFoundException`.
    pub(super) fn get_scale_set(&self, scale_set: &str) -> Response<Body> {
        if let Some(bad) = self.check_actions(scale_set, false) {
            return bad;
        }
        let body = self.inner.state().scale_set_json();
        actions_json(StatusCode::OK, body.to_string())
    }
}
