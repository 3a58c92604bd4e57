//! The recorders' run-attempt seam, served by the GitHub client's resolver (its cache,
//! rate-limit floor and credentials stay in the client; the recorders only see answers).

use std::future::Future;
use std::pin::Pin;

use github_client::{ResolvedAttempt, RunAttemptResolver};
use recorders::RunAttemptLookup;

/// [`RunAttemptLookup`] over GitHub REST.
pub struct GitHubRunAttempts(pub RunAttemptResolver);

impl RunAttemptLookup for GitHubRunAttempts {
    fn resolve(
        &self,
        owner: &str,
        repo: &str,
        run_id: i64,
    ) -> Pin<Box<dyn Future<Output = ResolvedAttempt> + Send + 'static>> {
        let resolver = self.0.clone();
        let (owner, repo) = (owner.to_owned(), repo.to_owned());
        Box::pin(async move { resolver.resolve(&owner, &repo, run_id).await })
    }
}
