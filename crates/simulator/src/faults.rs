//! The fault model both fakes share: what an injected fault does to a request, and the
//! ordered list of faults a fake keeps, with the same "first match with uses left fires and
//! counts down" rule. Each fake only decides what a fault matches (an [`Endpoint`] for the
//! Actions service, a method and path for the Kubernetes API) and how its error body looks.
//!
//! [`Endpoint`]: crate::actions::Endpoint

use std::time::Duration;

/// What a fault does after its delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Handle the request normally (a pure delay fault).
    #[default]
    Proceed,
    /// Answer this status instead of handling the request, with a `Retry-After` header
    /// when `retry_after` is set.
    Status { code: u16, retry_after: Option<u64> },
    /// Close the connection without answering.
    DropConnection,
    /// Answer 200 with a JSON body cut off part-way (empty when the cut is at 0), as a
    /// proxy or load balancer that drops the connection mid-body does (ARC 4285's "EOF").
    TruncatedBody,
}

/// The body a [`Outcome::TruncatedBody`] answers with: the start of a JSON object.
pub(crate) const TRUNCATED_BODY: &str = "{\"messageId\": 1, \"messageType\": \"RunnerScaleSetJob";

/// One firing of a fault: wait `delay` (if any), then apply `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effect {
    pub delay: Option<Duration>,
    pub outcome: Outcome,
}

struct Rule<M> {
    matcher: M,
    effect: Effect,
    /// `None`: fires forever.
    remaining: Option<usize>,
}

/// The faults a fake holds, in injection order, and the latency added to every request.
pub(crate) struct FaultList<M> {
    rules: Vec<Rule<M>>,
    pub(crate) latency: Duration,
}

impl<M> Default for FaultList<M> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            latency: Duration::ZERO,
        }
    }
}

impl<M> FaultList<M> {
    /// Adds a fault firing `times` times (`None`: until cleared); `Some(0)` never fires.
    pub(crate) fn push(&mut self, matcher: M, effect: Effect, times: Option<usize>) {
        if times != Some(0) {
            self.rules.push(Rule {
                matcher,
                effect,
                remaining: times,
            });
        }
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// Takes one firing of the first fault whose matcher `matches`; an exhausted fault is
    /// removed so it can no longer shadow the ones injected after it.
    pub(crate) fn take(&mut self, matches: impl Fn(&M) -> bool) -> Option<Effect> {
        let index = self.rules.iter().position(|r| matches(&r.matcher))?;
        let rule = &mut self.rules[index];
        let effect = rule.effect;
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(index);
            }
        }
        Some(effect)
    }
}

/// Returned by a fake's service to make hyper close the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: connection dropped")]
pub(crate) struct DropConnection;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_fires_counts_down_and_is_removed() {
        let mut faults = FaultList::default();
        let drop = Effect {
            delay: None,
            outcome: Outcome::DropConnection,
        };
        faults.push("a", drop, Some(2));
        faults.push("a", Effect::default(), None);
        faults.push("b", drop, Some(0));
        assert_eq!(faults.take(|m| *m == "a"), Some(drop));
        assert_eq!(faults.take(|m| *m == "a"), Some(drop));
        assert_eq!(faults.take(|m| *m == "a"), Some(Effect::default()));
        assert_eq!(faults.take(|m| *m == "a"), Some(Effect::default()));
        assert_eq!(faults.take(|m| *m == "b"), None);
    }
}
