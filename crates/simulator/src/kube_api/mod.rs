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

mod handler;
mod merge;
mod rbac;
mod store;
mod tls;

pub use merge::merge_patch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use http::Method;
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::faults::{Effect, Outcome};
use store::{ObjectKey, State, insert_runner, new_metadata};

/// API group of ARC's resources.
pub const GROUP: &str = "actions.github.com";
/// API version of ARC's resources.
pub const VERSION: &str = "v1alpha1";
/// Plural resource name of `EphemeralRunnerSet`.
pub const EPHEMERAL_RUNNER_SETS: &str = "ephemeralrunnersets";
/// Plural resource name of `EphemeralRunner`.
pub const EPHEMERAL_RUNNERS: &str = "ephemeralrunners";

const MERGE_PATCH: &str = "application/merge-patch+json";

/// One request as the fake saw it (the request log type both fakes share); `status` is 0
/// when the connection was dropped.
pub type RecordedRequest = crate::request_log::RequestRecord;

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

    /// What one firing does, in the fault model both fakes share.
    fn effect(&self) -> Effect {
        match self.action {
            FaultAction::Status(code) => Effect {
                delay: None,
                outcome: Outcome::Status {
                    code,
                    retry_after: None,
                },
            },
            FaultAction::Delay(delay) => Effect {
                delay: Some(delay),
                outcome: Outcome::Proceed,
            },
            FaultAction::DropConnection => Effect {
                delay: None,
                outcome: Outcome::DropConnection,
            },
        }
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
        let handler_shared = Arc::clone(&shared);
        let task = tokio::spawn(crate::accept::serve(
            "fake kube API",
            listener,
            Some(acceptor),
            shutdown_rx,
            move |request| handler::handle(Arc::clone(&handler_shared), request),
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
        self.shared.lock().requests.snapshot()
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
        let effect = fault.effect();
        let times = fault.times;
        self.shared.lock().faults.push(fault, effect, times);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Latency added to every request before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().faults.latency = latency;
    }

    /// Changes the Role's `resourceNames` for `ephemeralrunnersets` (`None`: any name).
    pub fn allowed_set_name(&self, name: Option<&str>) {
        self.shared.lock().allowed_set_name = name.map(str::to_owned);
    }

    /// Takes `patch` on `ephemeralrunners/status` out of the Role (`false`) or puts it back.
    pub fn grant_runner_status(&self, granted: bool) {
        self.shared.lock().runner_status_denied = !granted;
    }

    /// Turns the simulated runner controller on or off.
    pub fn set_runner_controller(&self, on: bool) {
        self.shared.lock().runner_controller = on;
    }
}
