//! Faithful fakes of the services the listener talks to, for tests, benchmarks and the demo.
//!
//! Each fake speaks the wire with its own types and never imports the crate it stands in
//! for, so a wire mistake in a client cannot hide behind the same mistake in its fake.
//!
//! Layout:
//! - [`actions`]: the GitHub REST + Actions scale-set service + message queue fake
//!   ([`actions::FakeActions`]). `server` holds connection handling and fault application,
//!   with routing, responses and the handlers per endpoint group (REST auth/registration,
//!   sessions and jobs, the message queue) in its submodules; `state` holds credentials and
//!   sessions, `state::jobs` the job model and the queue.
//! - [`kube_api`]: the Kubernetes API fake ([`kube_api::FakeKubeApi`]): `store` (objects and
//!   the simulated runner controller), `rbac` (request paths, verbs, the listener Role),
//!   `handler` (faults, the patch pipeline, `Status` answers), `merge` (RFC 7386).
//! - [`azure`]: Entra ID's token endpoint and Key Vault ([`azure::FakeAzure`]), over TLS.
//! - [`faults`]: the one fault model both fakes inject (delay, status, dropped connection,
//!   counted down per firing) and their latency.
//! - [`request_log`]: the one request record type and bounded log both fakes keep.
//! - `accept`: the accept loop every fake server runs (TLS or plain), backing off on
//!   accept errors such as `EMFILE` instead of spinning.
//! - [`proxy`]: a CONNECT forward proxy in front of a fake, for proxy settings.
//! - [`otlp_sink`]: an OTLP/HTTP trace receiver; [`workload`]: the demo environment and a
//!   workload generator driving the fakes.
//! - `strategies` (feature `strategies`): property-test strategies (arbitrary JSON).
//! - [`support`]: the test harness shared by the listener's tests, the bench and
//!   `gha-simulator` (spawn the listener with a clean environment, SIGTERM, free ports,
//!   wait-until); [`waterfall`]: the demo's per-job picture of its three spans.

mod accept;
pub mod actions;
pub mod azure;
pub mod faults;
pub mod kube_api;
pub mod otlp_sink;
pub mod proxy;
pub mod request_log;
#[cfg(feature = "strategies")]
pub mod strategies;
pub mod support;
pub mod waterfall;
pub mod workload;
