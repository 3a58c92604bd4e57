//! Fake Kubernetes API server for the ARC resources the listener patches.
//!
//! It serves HTTPS on loopback with a generated CA, stores objects as JSON, applies RFC 7386
//! merge patches with its own implementation, and enforces the Role ARC grants the listener:
//! a bearer token, and only `patch` on the set's own `ephemeralrunnersets/{name}` and on
//! `ephemeralrunners` and `ephemeralrunners/status` in one namespace. Everything else gets the
//! same `Status` objects (401/403/404/409/415/422) a real API server answers with.
//!
//! Tests and the demo drive it through [`FakeKubeApi`]: seed objects, read them back, inject
//! latency and faults, and inspect the log of every request.

mod merge;
mod tls;

pub use merge::merge_patch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// API group of ARC's resources.
pub const GROUP: &str = "actions.github.com";
/// API version of ARC's resources.
pub const VERSION: &str = "v1alpha1";
/// Plural resource name of `EphemeralRunnerSet`.
pub const EPHEMERAL_RUNNER_SETS: &str = "ephemeralrunnersets";
/// Plural resource name of `EphemeralRunner`.
pub const EPHEMERAL_RUNNERS: &str = "ephemeralrunners";

const MERGE_PATCH: &str = "application/merge-patch+json";

/// One request as the fake saw it. `status` is 0 when the connection was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query, e.g. `/apis/actions.github.com/v1alpha1/namespaces/ns/ephemeralrunnersets/set`.
    pub path: String,
    /// The query string (without `?`; often empty).
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
    pub status: u16,
    pub at: SystemTime,
}

impl RecordedRequest {
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this HTTP status and a matching v1 `Status` body instead of handling it.
    Status(u16),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without answering.
    DropConnection,
}

/// A fault for requests whose method and path match. `times: None` means forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `None` matches every method.
    pub method: Option<Method>,
    /// Exact path (without query), or a prefix when it ends with `*`.
    pub path: String,
    pub action: FaultAction,
    pub times: Option<usize>,
}

impl Fault {
    /// A fault on `PATCH path` applied to every matching request until cleared.
    pub fn patch(path: impl Into<String>, action: FaultAction) -> Self {
        Self {
            method: Some(Method::PATCH),
            path: path.into(),
            action,
            times: None,
        }
    }

    /// Limit the fault to the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectKey {
    group: String,
    version: String,
    resource: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    fn arc(resource: &str, namespace: &str, name: &str) -> Self {
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
struct State {
    objects: BTreeMap<ObjectKey, Value>,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    latency: Duration,
    allowed_set_name: Option<String>,
    runner_controller: bool,
    resource_version: u64,
}

impl State {
    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
}

struct Shared {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    namespace: String,
    service_account_namespace: String,
    service_account: String,
    token: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (only possible in a test assertion) must not
        // wedge every later request: keep using the state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.service_account_namespace, self.service_account
        )
    }
}

/// Configures and starts a [`FakeKubeApi`].
#[derive(Debug, Clone)]
pub struct FakeKubeApiBuilder {
    namespace: String,
    service_account_namespace: Option<String>,
    service_account: String,
    allowed_set_name: Option<String>,
    runner_controller: bool,
}

impl Default for FakeKubeApiBuilder {
    fn default() -> Self {
        Self {
            namespace: "arc-runners".to_owned(),
            service_account_namespace: None,
            service_account: "arc-runner-set-listener".to_owned(),
            allowed_set_name: None,
            runner_controller: false,
        }
    }
}

impl FakeKubeApiBuilder {
    /// The namespace of the ServiceAccount (ARC runs listeners in the controller's
    /// namespace); defaults to the Role's namespace.
    pub fn service_account_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.service_account_namespace = Some(namespace.into());
        self
    }

    /// The namespace of the sets and runners, where the listener Role is (default `arc-runners`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The listener's ServiceAccount name, used in `Forbidden` messages.
    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = name.into();
        self
    }

    /// The Role's `resourceNames` for `ephemeralrunnersets`. Without it any set name in the
    /// namespace may be patched.
    pub fn allowed_set_name(mut self, name: impl Into<String>) -> Self {
        self.allowed_set_name = Some(name.into());
        self
    }

    /// Simulate ARC's controller: patching a set's replicas creates or deletes runners.
    pub fn with_runner_controller(mut self, on: bool) -> Self {
        self.runner_controller = on;
        self
    }

    /// Binds `127.0.0.1:0` and serves HTTPS until the returned value is dropped.
    pub async fn start(self) -> anyhow::Result<FakeKubeApi> {
        let tls = tls::generate()?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let token: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                allowed_set_name: self.allowed_set_name,
                runner_controller: self.runner_controller,
                resource_version: 1000,
                ..State::default()
            }),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            service_account_namespace: self
                .service_account_namespace
                .unwrap_or_else(|| self.namespace.clone()),
            namespace: self.namespace,
            service_account: self.service_account,
            token,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let acceptor = TlsAcceptor::from(tls.config);
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::clone(&shared),
            shutdown_rx,
        ));
        Ok(FakeKubeApi {
            shared,
            addr,
            ca_pem: tls.ca_pem,
            task,
            shutdown,
        })
    }
}

/// A running fake API server. Dropping it stops the server.
pub struct FakeKubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    task: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for FakeKubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubeApi")
            .field("url", &self.url())
            .field("namespace", &self.shared.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

impl FakeKubeApi {
    pub fn builder() -> FakeKubeApiBuilder {
        FakeKubeApiBuilder::default()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The only bearer token the server accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// A kubeconfig with the server URL, the CA data and the bearer token.
    pub fn kubeconfig_yaml(&self) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: listener\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: listener\n    namespace: {ns}\ncurrent-context: fake\n",
            url = self.url(),
            token = self.shared.token,
            ns = self.shared.namespace,
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Path of a set, for faults and request-log assertions.
    pub fn set_path(namespace: &str, name: &str) -> String {
        format!("/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{EPHEMERAL_RUNNER_SETS}/{name}")
    }

    /// Path of a runner's status subresource.
    pub fn runner_status_path(namespace: &str, name: &str) -> String {
        format!("/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{EPHEMERAL_RUNNERS}/{name}/status")
    }

    /// Creates or replaces an `EphemeralRunnerSet`.
    pub fn put_ephemeral_runner_set(&self, namespace: &str, name: &str, replicas: i64) {
        let mut state = self.shared.lock();
        let rv = state.next_resource_version();
        let object = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "EphemeralRunnerSet",
            "metadata": new_metadata(namespace, name, &rv),
            "spec": {"replicas": replicas, "patchID": 0, "ephemeralRunnerSpec": {}},
            "status": {"currentReplicas": 0, "phase": "Running"},
        });
        state.objects.insert(
            ObjectKey::arc(EPHEMERAL_RUNNER_SETS, namespace, name),
            object,
        );
    }

    /// Creates or replaces an idle `EphemeralRunner`.
    pub fn put_ephemeral_runner(&self, namespace: &str, name: &str) {
        let mut state = self.shared.lock();
        insert_runner(&mut state, namespace, name, None);
    }

    /// Deletes a runner (as the controller does when its pod finishes). True if it existed.
    pub fn remove_ephemeral_runner(&self, namespace: &str, name: &str) -> bool {
        self.shared
            .lock()
            .objects
            .remove(&ObjectKey::arc(EPHEMERAL_RUNNERS, namespace, name))
            .is_some()
    }

    /// The stored object of an `actions.github.com/v1alpha1` resource (plural name).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&ObjectKey::arc(resource, namespace, name))
            .cloned()
    }

    pub fn get_ephemeral_runner_set(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(EPHEMERAL_RUNNER_SETS, namespace, name)
    }

    pub fn get_ephemeral_runner(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(EPHEMERAL_RUNNERS, namespace, name)
    }

    /// Names of the `EphemeralRunner`s in `namespace`, sorted.
    pub fn runners(&self, namespace: &str) -> Vec<String> {
        self.shared
            .lock()
            .objects
            .keys()
            .filter(|k| k.resource == EPHEMERAL_RUNNERS && k.namespace == namespace)
            .map(|k| k.name.clone())
            .collect()
    }

    /// Every request received so far, in completion order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The highest number of requests handled at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// Adds a fault; the first matching fault with uses left applies.
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Latency added to every request before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Changes the Role's `resourceNames` for `ephemeralrunnersets` (`None`: any name).
    pub fn allowed_set_name(&self, name: Option<&str>) {
        self.shared.lock().allowed_set_name = name.map(str::to_owned);
    }

    /// Turns the simulated runner controller on or off.
    pub fn set_runner_controller(&self, on: bool) {
        self.shared.lock().runner_controller = on;
    }
}

fn new_metadata(namespace: &str, name: &str, resource_version: &str) -> Value {
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

fn insert_runner(state: &mut State, namespace: &str, name: &str, owner: Option<&Value>) {
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
fn reconcile_runners(state: &mut State, namespace: &str, set_name: &str) {
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

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { handle(shared, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected fault: connection dropped")
    }
}

impl std::error::Error for DropConnection {}

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let _in_flight = InFlight::enter(&shared);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();

    let (latency, fault) = {
        let mut state = shared.lock();
        let fault = state
            .faults
            .iter_mut()
            .find(|f| f.times != Some(0) && f.matches(&parts.method, &path))
            .map(|f| {
                if let Some(n) = f.times.as_mut() {
                    *n -= 1;
                }
                f.action.clone()
            });
        (state.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let record = |status: u16| RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
        at: SystemTime::now(),
    };

    let response = match fault {
        Some(FaultAction::DropConnection) => {
            tracing::debug!(method = %parts.method, path = %path, "fake kube API: dropping connection (injected)");
            shared.lock().requests.push(record(0));
            return Err(DropConnection);
        }
        Some(FaultAction::Status(code)) => injected_status(code),
        Some(FaultAction::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
        None => None,
    };
    let response = match response {
        Some(response) => response,
        None => process(
            &shared,
            &parts.method,
            &path,
            &query,
            parts.headers.get(http::header::AUTHORIZATION),
            content_type.as_deref(),
            &body,
        ),
    };
    tracing::debug!(
        method = %parts.method,
        path = %path,
        status = response.status().as_u16(),
        "fake kube API request"
    );
    shared
        .lock()
        .requests
        .push(record(response.status().as_u16()));
    Ok(response)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status_object(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

fn status_response(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response<Full<Bytes>> {
    let status_code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status_code, &status_object(code, reason, message, details))
}

fn injected_status(code: u16) -> Option<Response<Full<Bytes>>> {
    if (200..300).contains(&code) {
        return None;
    }
    let (reason, message) = match code {
        400 => ("BadRequest", "bad request"),
        401 => ("Unauthorized", "Unauthorized"),
        403 => ("Forbidden", "forbidden"),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        409 => (
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
        ),
        410 => ("Expired", "too old resource version"),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        500 => (
            "InternalError",
            "an error on the server (\"\") has prevented the request from succeeding",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
        ),
        _ => ("Unknown", "injected fault"),
    };
    let details = (code == 429).then(|| json!({"retryAfterSeconds": 1}));
    let mut response = status_response(code, reason, message, details);
    if code == 429 {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Some(response)
}

/// A request path split the way the API server's request-info resolver does.
struct ResourcePath<'a> {
    group: &'a str,
    version: &'a str,
    namespace: Option<&'a str>,
    resource: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse_path(path: &str) -> Option<ResourcePath<'_>> {
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

fn verb(method: &Method, has_name: bool, query: &str) -> &'static str {
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

fn kind_of(resource: &str) -> &'static str {
    match resource {
        EPHEMERAL_RUNNER_SETS => "EphemeralRunnerSet",
        EPHEMERAL_RUNNERS => "EphemeralRunner",
        _ => "Unknown",
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn forbidden(shared: &Shared, verb: &str, rp: &ResourcePath<'_>) -> Response<Full<Bytes>> {
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

fn allowed(state: &State, shared: &Shared, verb: &str, rp: &ResourcePath<'_>) -> bool {
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
        (EPHEMERAL_RUNNERS, None | Some("status")) => true,
        _ => false,
    }
}

/// Type checks of the CRD schema for the fields the listener writes.
fn validate(resource: &str, name: &str, object: &Value) -> Option<Response<Full<Bytes>>> {
    let (integers, strings): (&[&str], &[&str]) = match resource {
        EPHEMERAL_RUNNER_SETS => (&["spec.replicas", "spec.patchID"], &[]),
        EPHEMERAL_RUNNERS => (
            &[
                "status.jobRequestId",
                "status.workflowRunId",
                "status.runnerId",
            ],
            &[
                "status.jobId",
                "status.jobRepositoryName",
                "status.jobWorkflowRef",
                "status.jobDisplayName",
            ],
        ),
        _ => (&[], &[]),
    };
    let lookup = |field: &str| {
        field
            .split('.')
            .try_fold(object, |value, key| value.get(key))
    };
    let type_name = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let checks = integers
        .iter()
        .map(|f| (*f, "integer"))
        .chain(strings.iter().map(|f| (*f, "string")));
    for (field, expected) in checks {
        let Some(value) = lookup(field) else {
            continue;
        };
        let actual = type_name(value);
        if actual != expected {
            let cause = format!("{field} in body must be of type {expected}: \"{actual}\"");
            let message = format!(
                "{}.{GROUP} \"{name}\" is invalid: {field}: Invalid value: \"{actual}\": {cause}",
                kind_of(resource)
            );
            let details = json!({
                "name": name,
                "group": GROUP,
                "kind": kind_of(resource),
                "causes": [{"reason": "FieldValueTypeInvalid", "message": format!("Invalid value: \"{actual}\": {cause}"), "field": field}],
            });
            return Some(status_response(422, "Invalid", &message, Some(details)));
        }
    }
    None
}

fn process(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    authorization: Option<&HeaderValue>,
    content_type: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    // Authentication.
    let bearer = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(shared.token.as_str()) {
        return status_response(401, "Unauthorized", "Unauthorized", None);
    }

    // Authorization against the listener Role.
    let Some(rp) = parse_path(path) else {
        let verb = verb(method, true, query);
        let message = format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            shared.user()
        );
        return status_response(403, "Forbidden", &message, Some(json!({})));
    };
    let verb = verb(method, rp.name.is_some(), query);
    let mut state = shared.lock();
    if !allowed(&state, shared, verb, &rp) {
        return forbidden(shared, verb, &rp);
    }
    let (Some(namespace), Some(name)) = (rp.namespace, rp.name) else {
        return forbidden(shared, verb, &rp);
    };

    // Only merge patches: custom resources have no strategic merge patch, and this fake
    // implements neither JSON patch nor server-side apply.
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim);
    if media_type != Some(MERGE_PATCH) {
        return status_response(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            None,
        );
    }

    let key = ObjectKey {
        group: rp.group.to_owned(),
        version: rp.version.to_owned(),
        resource: rp.resource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let Some(old) = state.objects.get(&key).cloned() else {
        let message = format!("{} \"{name}\" not found", qualified(rp.resource, rp.group));
        let details = json!({"name": name, "group": rp.group, "kind": rp.resource});
        return status_response(404, "NotFound", &message, Some(details));
    };

    let patch: Value = match serde_json::from_slice(body) {
        Ok(patch @ Value::Object(_)) => patch,
        Ok(_) => {
            return status_response(
                400,
                "BadRequest",
                "error decoding patch: a merge patch must be a JSON object",
                None,
            );
        }
        Err(e) => {
            return status_response(
                400,
                "BadRequest",
                &format!("error decoding patch: {e}"),
                None,
            );
        }
    };

    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(rp.resource, rp.group)
        );
        let details = json!({"name": name, "group": rp.group, "kind": rp.resource});
        return status_response(409, "Conflict", &message, Some(details));
    }

    let mut patched = old.clone();
    merge_patch(&mut patched, &patch);
    let mut new = if rp.subresource == Some("status") {
        // The status subresource ignores everything but the status stanza.
        let mut new = old.clone();
        match patched.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        new
    } else {
        // The main resource ignores status changes (status subresource enabled).
        match old.get("status") {
            Some(status) => patched["status"] = status.clone(),
            None => {
                if let Some(map) = patched.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        patched
    };
    // Identity fields cannot change through a patch.
    for field in ["apiVersion", "kind"] {
        new[field] = old[field].clone();
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
    ] {
        new["metadata"][field] = old["metadata"][field].clone();
    }

    if let Some(invalid) = validate(rp.resource, name, &new) {
        return invalid;
    }

    if new != old {
        new["metadata"]["resourceVersion"] = json!(state.next_resource_version());
        if new.get("spec") != old.get("spec") {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        state.objects.insert(key.clone(), new.clone());
        if state.runner_controller && rp.resource == EPHEMERAL_RUNNER_SETS {
            reconcile_runners(&mut state, namespace, name);
            if let Some(updated) = state.objects.get(&key) {
                new = updated.clone();
            }
        }
    }
    json_response(StatusCode::OK, &new)
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
