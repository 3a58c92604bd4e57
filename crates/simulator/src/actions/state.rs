//! The fake's state: credentials, the session, the job model and the message queue.
//!
//! Everything lives behind one mutex that is never held across an `.await`. Statistics are
//! kept as counters and job messages are serialised once when they are produced, so the
//! cost per job is constant however many jobs are in flight.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod jobs;

use jobs::{InFlight, Job, QueueItem};

use super::{
    Endpoint, FakeActionsConfig, FakeStatistics, FakeStats, RegistrationScope, RequestRecord,
};
use crate::faults::{Effect, FaultList};
use crate::request_log::RequestLog;

/// The request log keeps at most this many records by default (benchmarks send many).
const DEFAULT_REQUEST_LOG_LIMIT: usize = 100_000;
/// What the wire says for "not set".
const UNSET_TIME: &str = "0001-01-01T00:00:00Z";
/// Registration and installation tokens live an hour, like GitHub's.
const GITHUB_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub(crate) fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub(crate) fn random_uuid() -> String {
    let v: u128 = rand::random();
    // Shape of a version-4 uuid.
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|_| UNSET_TIME.to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) owner: String,
}

pub(crate) struct State {
    scale_set_id: i64,
    /// `false` after [`crate::actions::FakeActions::set_scale_set_registered`]`(false)`: the
    /// service answers 404 `RunnerScaleSetNotFoundException` for the scale set.
    pub(crate) scale_set_registered: bool,
    /// The PAT GitHub REST accepts now (`FakeAuth::Pat`; replaced to model a rotation).
    pub(crate) accepted_pat: Option<String>,
    scale_set_name: String,
    max_jobs_per_message: usize,
    queue_token_ttl: Duration,
    admin_token_ttl: Duration,
    base_url: String,
    acquire_job_url: String,
    admin_secret: Vec<u8>,

    /// Injected faults by endpoint, and the latency added to every request.
    pub(crate) faults: FaultList<Endpoint>,
    /// Admin token → when it expires.
    pub(crate) admin_tokens: HashMap<String, Instant>,
    /// Queue token → (session id, when it expires).
    pub(crate) queue_tokens: HashMap<String, (String, Instant)>,
    installation_tokens: HashMap<String, Instant>,
    registration_tokens: HashMap<String, (RegistrationScope, Instant)>,
    pub(crate) session: Option<Session>,
    stale_sessions: Vec<(String, Instant)>,

    pub(crate) requests: RequestLog<Endpoint>,
    pub(crate) registration_scopes: Vec<RegistrationScope>,
    pub(crate) registered_urls: Vec<String>,
    pub(crate) stats: FakeStats,
    pub(crate) registered_runners: i64,
    pub(crate) runs: super::server::runs::WorkflowRuns,

    jobs: HashMap<i64, Job>,
    available: i64,
    acquired: i64,
    running: i64,
    queue: VecDeque<QueueItem>,
    in_flight: Option<InFlight>,
    next_request_id: i64,
    next_message_id: i64,
    next_run_id: i64,
    next_runner_id: i64,
}

pub(crate) enum CreateSession {
    Created(serde_json::Value),
    Conflict(String),
}

impl State {
    pub(crate) fn new(
        config: &FakeActionsConfig,
        base_url: &str,
        service_prefix: &str,
    ) -> anyhow::Result<State> {
        Ok(State {
            scale_set_id: config.scale_set_id,
            scale_set_registered: true,
            accepted_pat: match &config.auth {
                crate::actions::FakeAuth::Pat { token } => Some(token.clone()),
                crate::actions::FakeAuth::App { .. } => None,
            },
            scale_set_name: config.scale_set_name.clone(),
            max_jobs_per_message: config.max_jobs_per_message,
            queue_token_ttl: config.queue_token_ttl,
            admin_token_ttl: config.admin_token_ttl,
            base_url: base_url.to_owned(),
            acquire_job_url: format!(
                "{base_url}{service_prefix}_apis/runtime/runnerscalesets/{}/acquirejobs",
                config.scale_set_id
            ),
            admin_secret: random_alnum(32).into_bytes(),
            faults: FaultList::default(),
            admin_tokens: HashMap::new(),
            queue_tokens: HashMap::new(),
            installation_tokens: HashMap::new(),
            registration_tokens: HashMap::new(),
            session: None,
            stale_sessions: Vec::new(),
            requests: RequestLog::with_limit(DEFAULT_REQUEST_LOG_LIMIT),
            registration_scopes: Vec::new(),
            registered_urls: Vec::new(),
            stats: FakeStats::default(),
            registered_runners: 0,
            runs: Default::default(),
            jobs: HashMap::new(),
            available: 0,
            acquired: 0,
            running: 0,
            queue: VecDeque::new(),
            in_flight: None,
            next_request_id: 1,
            next_message_id: 1,
            next_run_id: 1_000_000,
            next_runner_id: 1,
        })
    }

    pub(crate) fn statistics(&self) -> FakeStatistics {
        FakeStatistics {
            total_available_jobs: self.available,
            total_acquired_jobs: self.acquired,
            total_assigned_jobs: self.acquired + self.running,
            total_running_jobs: self.running,
            total_registered_runners: self.registered_runners,
            total_busy_runners: self.running,
            total_idle_runners: (self.registered_runners - self.running).max(0),
        }
    }

    pub(crate) fn record(&mut self, record: RequestRecord) {
        self.stats.requests += 1;
        if record.status == 401 {
            self.stats.unauthorized += 1;
        }
        self.requests.push(record);
    }

    /// Take one firing of the first pending fault for `endpoint`.
    pub(crate) fn take_fault(&mut self, endpoint: Endpoint) -> Option<Effect> {
        let effect = self.faults.take(|e| *e == endpoint)?;
        self.stats.faults_fired += 1;
        Some(effect)
    }

    // ---- GitHub credentials -------------------------------------------------------------

    pub(crate) fn issue_installation_token(&mut self) -> (String, String) {
        let token = format!("ghs_{}", random_alnum(36));
        self.installation_tokens
            .insert(token.clone(), Instant::now() + GITHUB_TOKEN_TTL);
        self.stats.app_tokens_issued += 1;
        (token, github_expiry())
    }

    pub(crate) fn installation_token_valid(&self, token: &str) -> bool {
        self.installation_tokens
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }

    pub(crate) fn issue_registration_token(
        &mut self,
        scope: RegistrationScope,
    ) -> (String, String) {
        let token = random_alnum(29).to_uppercase();
        self.registration_tokens.insert(
            token.clone(),
            (scope.clone(), Instant::now() + GITHUB_TOKEN_TTL),
        );
        self.registration_scopes.push(scope);
        self.stats.registration_tokens_issued += 1;
        (token, github_expiry())
    }

    pub(crate) fn registration_token_scope(&self, token: &str) -> Option<RegistrationScope> {
        self.registration_tokens
            .get(token)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(scope, _)| scope.clone())
    }

    /// A fresh admin JWT whose `exp` claim is `admin_token_ttl` from now.
    pub(crate) fn issue_admin_token(&mut self, url: &str) -> anyhow::Result<String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            aud: &'a str,
            sub: &'a str,
            scp: &'a str,
            iat: u64,
            nbf: u64,
            exp: u64,
            owner: &'a str,
        }
        let now = unix_now();
        let ttl = self.admin_token_ttl;
        let claims = Claims {
            iss: "https://vstoken.actions.githubusercontent.com",
            aud: &self.base_url,
            sub: "fake-actions-runner-admin",
            scp: "Actions.RunnerAdmin",
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            owner: url,
        };
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.admin_secret),
        )?;
        self.admin_tokens
            .insert(token.clone(), Instant::now() + ttl);
        self.stats.runner_registrations += 1;
        self.registered_urls.push(url.to_owned());
        Ok(token)
    }

    pub(crate) fn admin_token_valid(&self, token: &str) -> bool {
        self.admin_tokens
            .get(token)
            .is_some_and(|exp| *exp > Instant::now())
    }

    /// The session a valid, unexpired queue token belongs to.
    pub(crate) fn queue_token_session(&self, token: &str) -> Option<&str> {
        self.queue_tokens
            .get(token)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(session, _)| session.as_str())
    }

    // ---- sessions -----------------------------------------------------------------------

    pub(crate) fn add_stale_session(&mut self, owner: &str, lifetime: Duration) {
        self.stale_sessions
            .push((owner.to_owned(), Instant::now() + lifetime));
    }

    pub(crate) fn create_session(&mut self, owner: &str, queue_base: &str) -> CreateSession {
        let now = Instant::now();
        self.stale_sessions.retain(|(_, until)| *until > now);
        let holder = self
            .session
            .as_ref()
            .map(|s| s.owner.clone())
            .or_else(|| self.stale_sessions.first().map(|(o, _)| o.clone()));
        if let Some(holder) = holder {
            self.stats.session_conflicts += 1;
            return CreateSession::Conflict(format!(
                "The scale set {} already has an active session for owner {holder}.",
                self.scale_set_name
            ));
        }
        let id = random_uuid();
        self.session = Some(Session {
            id: id.clone(),
            owner: owner.to_owned(),
        });
        self.stats.sessions_created += 1;
        CreateSession::Created(self.session_json(&id, owner, queue_base))
    }

    /// A new queue token for the live session `id`; `None` if that is not the live session.
    pub(crate) fn refresh_session(
        &mut self,
        id: &str,
        queue_base: &str,
    ) -> Option<serde_json::Value> {
        let owner = self.session.as_ref().filter(|s| s.id == id)?.owner.clone();
        self.stats.sessions_refreshed += 1;
        Some(self.session_json(id, &owner, queue_base))
    }

    pub(crate) fn delete_session(&mut self, id: &str) -> bool {
        if self.session.as_ref().is_none_or(|s| s.id != id) {
            return false;
        }
        self.session = None;
        self.queue_tokens.retain(|_, (session, _)| session != id);
        self.stats.sessions_deleted += 1;
        true
    }

    fn session_json(&mut self, id: &str, owner: &str, queue_base: &str) -> serde_json::Value {
        let token = random_alnum(64);
        self.queue_tokens.insert(
            token.clone(),
            (id.to_owned(), Instant::now() + self.queue_token_ttl),
        );
        let statistics = self.statistics();
        serde_json::json!({
            "sessionId": id,
            "ownerName": owner,
            "runnerScaleSet": self.scale_set_json(),
            "messageQueueUrl": format!(
                "{queue_base}/queue/{id}/messages?sessionId={id}&api-version=6.0-preview"
            ),
            "messageQueueAccessToken": token,
            "statistics": statistics,
        })
    }

    /// The scale set as `GET runnerscalesets/{id}` and a session describe it.
    pub(crate) fn scale_set_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.scale_set_id,
            "name": self.scale_set_name,
            "runnerGroupId": 1,
            "runnerGroupName": "Default",
            "labels": [{"id": 0, "name": self.scale_set_name, "type": "System"}],
            "runnerSetting": {"ephemeral": true, "isElastic": true, "disableUpdate": true},
            "statistics": self.statistics(),
        })
    }

    pub(crate) fn live_session_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.id.as_str())
    }

    pub(crate) fn scale_set_id(&self) -> i64 {
        self.scale_set_id
    }
}

fn github_expiry() -> String {
    rfc3339(OffsetDateTime::now_utc() + GITHUB_TOKEN_TTL)
}
