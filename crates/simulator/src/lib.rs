//! Faithful fakes of the services the listener talks to, for tests, benchmarks and the demo.
//!
//! Each fake speaks the wire with its own types and never imports the crate it stands in
//! for, so a wire mistake in a client cannot hide behind the same mistake in its fake.
#![forbid(unsafe_code)]

pub mod actions;
pub mod kube_api;
pub mod otlp_sink;
pub mod support;
pub mod waterfall;
pub mod workload;
