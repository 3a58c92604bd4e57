//! The run attempt of a workflow run, from GitHub REST
//! (`GET {api}/repos/{owner}/{repo}/actions/runs/{run_id}` → `run_attempt`), for job spans.
//!
//! Queue messages carry the run id but not the attempt. The lookup is best effort and never
//! on the scale path: one request per run at most every [`RUN_CACHE_TTL`] (concurrent
//! callers for the same run share one request), no retry (the caller falls back to attempt
//! 1 after its own bound), and below the rate-limit floor no request at all until the
//! budget resets, so the listener's own calls keep their share of the hourly budget.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method};
use serde::Deserialize;

use crate::auth::Auth;
use crate::client::{ActionsClient, Request};
use crate::error::Error;
use crate::secret::SecretString;

/// How long one run's answer is reused.
pub const RUN_CACHE_TTL: Duration = Duration::from_secs(30);
/// Runs remembered at most; past it the oldest entry goes.
pub const RUN_CACHE_CAPACITY: usize = 10_000;
/// Below this share of the hourly budget (`X-RateLimit-Limit`), lookups stop until the
/// reset: the rest is kept for the registration and token calls.
pub const RATE_LIMIT_FLOOR_PERCENT: u64 = 10;
/// Timeout of one lookup request (the spans wait for it no longer anyway).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause when GitHub says "rate limited" without saying until when.
const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);
/// The permission a token needs for the lookup, named in the one warning on 403/404.
pub const RUN_ATTEMPT_PERMISSION: &str = "Actions: read";

/// What one run's lookup gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAttemptOutcome {
    Ok(u32),
    /// 401/403: the token may not read the repository's Actions runs.
    Denied,
    /// 404: the run is unknown, or hidden from the token (GitHub answers 404 then too).
    NotFound,
    /// 429, a rate-limit 403, or the floor reached: no lookup until the reset.
    RateLimited,
    /// Transport failure, 5xx, an unreadable body.
    Error,
}

impl RunAttemptOutcome {
    /// The `result` label of the lookup counter.
    pub fn as_str(self) -> &'static str {
        match self {
            RunAttemptOutcome::Ok(_) => "ok",
            RunAttemptOutcome::Denied => "denied",
            RunAttemptOutcome::NotFound => "not_found",
            RunAttemptOutcome::RateLimited => "rate_limited",
            RunAttemptOutcome::Error => "error",
        }
    }

    /// The attempt to use: the answer, or 1 (the id schemes' "unknown attempt").
    pub fn attempt(self) -> u32 {
        match self {
            RunAttemptOutcome::Ok(n) => n,
            _ => 1,
        }
    }
}

/// A resolved attempt, and whether it came from the cache (no request, not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedAttempt {
    pub outcome: RunAttemptOutcome,
    pub cached: bool,
}

type Cell = Arc<tokio::sync::OnceCell<RunAttemptOutcome>>;

struct Entry {
    created: Instant,
    cell: Cell,
}

/// Runs by id, and their insertion order, oldest first: the cache evicts from the front, in
/// constant time per run (a scan for the oldest entry made every new run past the capacity
/// cost O(capacity)).
#[derive(Default)]
struct RunCache {
    entries: HashMap<i64, Entry>,
    /// `(run, created)` in insertion order; an element whose entry has since been replaced
    /// (a fresh cell after the TTL) no longer matches it and is skipped.
    order: VecDeque<(i64, Instant)>,
}

impl RunCache {
    /// The run's cell, fresh when missing or older than the TTL; true when it was fresh.
    fn cell(&mut self, run_id: i64, now: Instant, ttl: Duration, capacity: usize) -> (Cell, bool) {
        if let Some(entry) = self.entries.get(&run_id)
            && now.duration_since(entry.created) < ttl
        {
            return (entry.cell.clone(), false);
        }
        // Creation times grow along `order`: expired entries are at its front, and past the
        // capacity the front is the oldest.
        while let Some(&(id, created)) = self.order.front() {
            let current = self.entries.get(&id).is_some_and(|e| e.created == created);
            let expired = now.duration_since(created) >= ttl;
            if current && !expired && self.entries.len() < capacity.max(1) {
                break;
            }
            self.order.pop_front();
            if current {
                self.entries.remove(&id);
            }
        }
        let cell = Cell::default();
        self.entries.insert(
            run_id,
            Entry {
                created: now,
                cell: cell.clone(),
            },
        );
        self.order.push_back((run_id, now));
        (cell, true)
    }
}

/// Resolves run attempts with the listener's own GitHub credentials (the PAT, or the App's
/// installation token), on the client's REST base, proxy and roots. Cheap to clone.
#[derive(Clone)]
pub struct RunAttemptResolver {
    inner: Arc<ResolverInner>,
}

struct ResolverInner {
    client: ActionsClient,
    /// `{api}/repos`, parsed once (None when the base is unusable: each lookup then reports
    /// the error).
    repos_url: Option<url::Url>,
    cache: Mutex<RunCache>,
    /// No request before this instant (rate limited, or the floor reached).
    paused_until: Mutex<Option<Instant>>,
    warned: AtomicBool,
    ttl: Duration,
    capacity: usize,
}

#[derive(Deserialize)]
struct WorkflowRun {
    run_attempt: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent across a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunAttemptResolver {
    pub fn new(client: ActionsClient) -> Self {
        Self::with_cache(client, RUN_CACHE_TTL, RUN_CACHE_CAPACITY)
    }

    /// Tests: another TTL or capacity.
    pub fn with_cache(client: ActionsClient, ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Arc::new(ResolverInner {
                repos_url: client.rest_url("/repos").ok(),
                client,
                cache: Mutex::new(RunCache::default()),
                paused_until: Mutex::new(None),
                warned: AtomicBool::new(false),
                ttl,
                capacity,
            }),
        }
    }

    /// The attempt of `owner/repo`'s run `run_id`; never fails (see the outcome).
    pub async fn resolve(&self, owner: &str, repo: &str, run_id: i64) -> ResolvedAttempt {
        let (cell, _fresh) = lock(&self.inner.cache).cell(
            run_id,
            Instant::now(),
            self.inner.ttl,
            self.inner.capacity,
        );
        let mut asked = false;
        let outcome = *cell
            .get_or_init(|| {
                asked = true;
                self.lookup(owner, repo, run_id)
            })
            .await;
        ResolvedAttempt {
            outcome,
            // Only the caller whose request filled the cell counts the lookup.
            cached: !asked,
        }
    }

    async fn lookup(&self, owner: &str, repo: &str, run_id: i64) -> RunAttemptOutcome {
        let paused = lock(&self.inner.paused_until).is_some_and(|until| Instant::now() < until);
        if paused {
            return RunAttemptOutcome::RateLimited;
        }
        let outcome = match self.request(owner, repo, run_id).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::debug!(run_id, %error, "run attempt lookup failed");
                match error {
                    Error::CredentialsRejected(_) => RunAttemptOutcome::Denied,
                    _ => RunAttemptOutcome::Error,
                }
            }
        };
        if matches!(
            outcome,
            RunAttemptOutcome::Denied | RunAttemptOutcome::NotFound
        ) && !self.inner.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                run_id,
                result = outcome.as_str(),
                permission = RUN_ATTEMPT_PERMISSION,
                "cannot read workflow runs: give the token (or the GitHub App) the \
                 repository permission \"Actions: read\"; job spans use attempt 1 meanwhile \
                 (warned once)"
            );
        }
        outcome
    }

    async fn request(
        &self,
        owner: &str,
        repo: &str,
        run_id: i64,
    ) -> Result<RunAttemptOutcome, Error> {
        let client = &self.inner.client;
        let auth = client.inner.auth();
        let bearer = match &*auth {
            Auth::Token(pat) => pat.clone(),
            // Boxed: inline, its state (a token request) made every lookup's future 1,432
            // bytes, PAT or not, too large for the allocator's per-thread cache.
            Auth::App { .. } => Box::pin(client.installation_token()).await?,
        };
        let mut url = match &self.inner.repos_url {
            Some(url) => url.clone(),
            None => client.rest_url("/repos")?,
        };
        url.path_segments_mut()
            .map_err(|()| Error::InvalidConfig {
                reason: "the GitHub REST base cannot hold a path".into(),
            })?
            .extend([owner, repo, "actions", "runs", &run_id.to_string()]);
        let req = Request {
            method: Method::GET,
            url,
            authorization: Some(SecretString::new(format!(
                "Bearer {}",
                bearer.expose_secret()
            ))),
            headers: vec![("Accept", "application/vnd.github+json".to_owned())],
            body: None,
            timeout: client.inner.options.request_timeout.min(LOOKUP_TIMEOUT),
            retry_auth_failures: false,
        };
        let resp = client.send_once(&req).await?;
        let now = SystemTime::now();
        let limited = rate_limited(resp.status, &resp.headers);
        if let Some(pause) = pause_for(&resp.headers, limited, now) {
            tracing::info!(
                pause_s = pause.as_secs(),
                "run attempt lookups paused to keep the GitHub API rate-limit budget"
            );
            *lock(&self.inner.paused_until) = Some(Instant::now() + pause);
        }
        Ok(match resp.status {
            _ if limited => RunAttemptOutcome::RateLimited,
            200..=299 => match resp.json::<WorkflowRun>(&req) {
                Ok(run) if run.run_attempt >= 1 => RunAttemptOutcome::Ok(run.run_attempt),
                _ => RunAttemptOutcome::Error,
            },
            401 | 403 => {
                if matches!(*auth, Auth::App { .. }) {
                    // The installation token may have been revoked: fetch a new one next time.
                    *client.inner.installation.lock().await = None;
                }
                RunAttemptOutcome::Denied
            }
            404 => RunAttemptOutcome::NotFound,
            _ => RunAttemptOutcome::Error,
        })
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// GitHub's rate-limit answers: 429, or 403 with the budget spent or a `Retry-After`.
fn rate_limited(status: u16, headers: &HeaderMap) -> bool {
    status == 429
        || (status == 403
            && (header_u64(headers, "x-ratelimit-remaining") == Some(0)
                || headers.contains_key(http::header::RETRY_AFTER)))
}

/// How long to stop looking up: until `Retry-After`, or until `X-RateLimit-Reset` when the
/// remaining budget is under the floor (or the answer was a rate limit).
fn pause_for(headers: &HeaderMap, limited: bool, now: SystemTime) -> Option<Duration> {
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| ::retry::parse_retry_after(v, now));
    if let Some(pause) = retry_after {
        return Some(pause);
    }
    let below_floor = match (
        header_u64(headers, "x-ratelimit-remaining"),
        header_u64(headers, "x-ratelimit-limit"),
    ) {
        (Some(remaining), Some(limit)) => remaining * 100 < limit * RATE_LIMIT_FLOOR_PERCENT,
        (Some(0), None) => true,
        _ => false,
    };
    if !(below_floor || limited) {
        return None;
    }
    let until_reset = header_u64(headers, "x-ratelimit-reset").map(|reset| {
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Duration::from_secs(reset.saturating_sub(now_s).max(1))
    });
    Some(until_reset.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn floor_pauses_until_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let low = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "499"),
            ("x-ratelimit-reset", "1600"),
        ]);
        assert_eq!(pause_for(&low, false, now), Some(Duration::from_secs(600)));
        let fine = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "500"),
            ("x-ratelimit-reset", "1600"),
        ]);
        assert_eq!(pause_for(&fine, false, now), None);
        let retry = headers(&[("retry-after", "7")]);
        assert!(rate_limited(403, &retry));
        assert_eq!(pause_for(&retry, true, now), Some(Duration::from_secs(7)));
        assert!(!rate_limited(403, &HeaderMap::new()));
        assert_eq!(
            pause_for(&HeaderMap::new(), true, now),
            Some(DEFAULT_RATE_LIMIT_PAUSE)
        );
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let mut cache = RunCache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(30);
        assert!(cache.cell(1, t0, ttl, 2).1);
        assert!(!cache.cell(1, t0 + Duration::from_secs(29), ttl, 2).1);
        assert!(cache.cell(2, t0 + Duration::from_secs(1), ttl, 2).1);
        assert!(cache.cell(3, t0 + Duration::from_secs(2), ttl, 2).1);
        assert_eq!(cache.entries.len(), 2);
        assert!(!cache.entries.contains_key(&1), "the oldest run goes first");
        assert!(
            cache.cell(2, t0 + Duration::from_secs(31), ttl, 2).1,
            "expired"
        );
    }

    #[test]
    fn cache_evicts_in_insertion_order_past_refreshes() {
        let mut cache = RunCache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(30);
        let at = |s: u64| t0 + Duration::from_secs(s);
        for (run, second) in [(1, 1), (2, 10), (3, 20)] {
            assert!(cache.cell(run, at(second), ttl, 3).1);
        }
        // Run 1 expires and is looked up again: it is now the newest.
        assert!(cache.cell(1, at(31), ttl, 3).1);
        assert_eq!(cache.entries.len(), 3, "run 1 replaced, not added");
        // Past the capacity the oldest current entry goes: run 2, not run 1.
        assert!(cache.cell(4, at(32), ttl, 3).1);
        assert!(!cache.entries.contains_key(&2));
        for run in [3, 1, 4] {
            assert!(!cache.cell(run, at(33), ttl, 3).1, "run {run} kept");
        }
        // Expired entries go as soon as a run is added, whatever the capacity.
        assert!(cache.cell(5, at(51), ttl, 3).1);
        assert!(
            !cache.entries.contains_key(&3),
            "run 3 (at 20 s) expired at 50 s"
        );
        for run in 6..=100 {
            cache.cell(run, at(51 + run as u64), ttl, 3);
        }
        assert_eq!(cache.entries.len(), 3);
        assert!(
            cache.order.len() <= 3,
            "no stale order left behind: {}",
            cache.order.len()
        );
    }
}
