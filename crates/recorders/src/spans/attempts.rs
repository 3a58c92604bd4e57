//! Run attempts for job spans: the lookup seam ([`RunAttemptLookup`], implemented by the
//! binary with GitHub REST), the lookups started when a job starts and kept for its
//! completion, and the attempts resolved per run ([`JobTraceIds`], which exemplars use).
//!
//! The seam is a trait here rather than the github-client resolver itself so that the
//! recorders hold no HTTP client, credentials or rate-limit policy: they only start a
//! lookup, never await it on the recording path, and count its outcome. The answer type
//! ([`ResolvedAttempt`]) is plain data from the crate the message types come from.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use github_client::{JobCommon, ResolvedAttempt};
use opentelemetry::trace::TraceId;
use prometheus::IntCounterVec;
use tokio::sync::watch;

use super::ids::{IdScheme, UNKNOWN_ATTEMPT, run_trace_id};

/// How long the spans of a completed job wait for its run's attempt before using 1.
pub const RUN_ATTEMPT_WAIT: Duration = Duration::from_secs(10);
/// Jobs whose start was seen and whose completion is awaited, and runs whose attempt is
/// remembered, at most; past it the oldest goes.
const REMEMBERED: usize = 10_000;

/// Resolves a run's attempt. Implementations never fail: the answer says what happened.
pub trait RunAttemptLookup: Send + Sync {
    fn resolve(
        &self,
        owner: &str,
        repo: &str,
        run_id: i64,
    ) -> Pin<Box<dyn Future<Output = ResolvedAttempt> + Send + 'static>>;
}

/// A map that forgets its oldest insertions past a capacity.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&oldest);
        }
        // Keys removed by `remove` linger in `order`; keep it from growing past twice the map.
        if self.order.len() > 2 * self.capacity.max(1) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent across a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The trace id of a job's run, with the attempt resolved for it so far (1 until then):
/// what exemplars carry, equal to the trace id of the job's exported spans.
#[derive(Clone)]
pub struct JobTraceIds {
    scheme: IdScheme,
    resolved: Arc<Mutex<Bounded<i64, u32>>>,
}

impl std::fmt::Debug for JobTraceIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobTraceIds")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl JobTraceIds {
    pub(super) fn new(scheme: IdScheme) -> Self {
        Self {
            scheme,
            resolved: Arc::new(Mutex::new(Bounded::new(REMEMBERED))),
        }
    }

    /// The trace id of run `run_id` as the spans use it.
    pub fn trace_id(&self, run_id: i64) -> TraceId {
        let attempt = lock(&self.resolved)
            .get(&run_id)
            .copied()
            .unwrap_or(UNKNOWN_ATTEMPT);
        run_trace_id(self.scheme, run_id, attempt)
    }

    pub(super) fn record(&self, run_id: i64, attempt: u32) {
        lock(&self.resolved).insert(run_id, attempt);
    }
}

/// The span recorder's lookups: started at a job's start, kept until its completion.
pub(super) struct RunAttempts {
    lookup: OnceLock<Arc<dyn RunAttemptLookup>>,
    runtime: tokio::runtime::Handle,
    /// Runner request id → the attempt of its run, once looked up.
    started: Mutex<Bounded<i64, watch::Receiver<Option<u32>>>>,
    lookups: IntCounterVec,
    pub(super) trace_ids: JobTraceIds,
}

impl RunAttempts {
    pub(super) fn new(
        scheme: IdScheme,
        lookups: IntCounterVec,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            lookup: OnceLock::new(),
            runtime,
            started: Mutex::new(Bounded::new(REMEMBERED)),
            lookups,
            trace_ids: JobTraceIds::new(scheme),
        }
    }

    /// Use `lookup` from now on; false when one was already set.
    pub(super) fn set_lookup(&self, lookup: Arc<dyn RunAttemptLookup>) -> bool {
        self.lookup.set(lookup).is_ok()
    }

    /// A run cannot be re-run while one of its jobs runs: the attempt at the start is the
    /// job's. The lookup runs in the background; nothing waits for it here.
    pub(super) fn on_started(&self, job: &JobCommon) {
        let Some(lookup) = self.lookup.get() else {
            return;
        };
        let attempt = self.spawn_lookup(lookup.as_ref(), job);
        lock(&self.started).insert(job.runner_request_id, attempt);
    }

    /// The attempt of a completed job's run, to wait for (a fresh lookup when the start was
    /// not seen); None when lookups are off.
    pub(super) fn on_completed(&self, job: &JobCommon) -> Option<watch::Receiver<Option<u32>>> {
        let lookup = self.lookup.get()?;
        let known = lock(&self.started).remove(&job.runner_request_id);
        Some(known.unwrap_or_else(|| self.spawn_lookup(lookup.as_ref(), job)))
    }

    fn spawn_lookup(
        &self,
        lookup: &dyn RunAttemptLookup,
        job: &JobCommon,
    ) -> watch::Receiver<Option<u32>> {
        let (tx, rx) = watch::channel(None);
        let run_id = job.workflow_run_id;
        let answer = lookup.resolve(&job.owner_name, &job.repository_name, run_id);
        let lookups = self.lookups.clone();
        let trace_ids = self.trace_ids.clone();
        self.runtime.spawn(async move {
            let answer = answer.await;
            if !answer.cached {
                lookups.with_label_values(&[answer.outcome.as_str()]).inc();
            }
            let attempt = answer.outcome.attempt();
            trace_ids.record(run_id, attempt);
            let _ = tx.send(Some(attempt));
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_forgets_the_oldest() {
        let mut b = Bounded::new(2);
        b.insert(1, "a");
        b.insert(2, "b");
        b.insert(3, "c");
        assert!(b.get(&1).is_none());
        assert_eq!(b.remove(&2), Some("b"));
        for i in 10..100 {
            b.insert(i, "x");
            b.remove(&i);
        }
        assert!(b.order.len() <= 4);
        assert_eq!(b.get(&3), Some(&"c"));
    }
}
