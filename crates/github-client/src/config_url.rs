//! The `configure_url` of a scale set: which GitHub, which scope, which REST base.

use url::Url;

/// Environment variable that forces GHES-style REST URLs even for hosted hosts.
pub const FORCE_GHES_ENV: &str = "GITHUB_ACTIONS_FORCE_GHES";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Enterprise,
    Organization,
    Repository,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigUrlError {
    #[error("config URL {url:?} is not a valid URL: {reason}")]
    Unparsable { url: String, reason: String },
    #[error("config URL {url:?} must use http or https, not {scheme:?}")]
    Scheme { url: String, scheme: String },
    #[error("config URL {url:?} has no host")]
    NoHost { url: String },
    #[error(
        "config URL {url:?} should point to an enterprise (/enterprises/ENT), an organization (/ORG) or a repository (/ORG/REPO)"
    )]
    Scope { url: String },
}

/// A parsed `configure_url`, e.g. `https://github.com/my-org/my-repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubConfigUrl {
    /// The URL as configured, without trailing slashes: sent as-is to `runner-registration`.
    raw: String,
    url: Url,
    scope: Scope,
    enterprise: String,
    organization: String,
    repository: String,
    hosted: bool,
}

/// True when `GITHUB_ACTIONS_FORCE_GHES` is set in the process environment (any value, as the Go listener).
pub fn force_ghes_from_env() -> bool {
    std::env::var_os(FORCE_GHES_ENV).is_some()
}

impl GitHubConfigUrl {
    /// Parse, reading `GITHUB_ACTIONS_FORCE_GHES` from the process environment.
    pub fn parse(input: &str) -> Result<Self, ConfigUrlError> {
        Self::parse_with(input, force_ghes_from_env())
    }

    /// Parse with an explicit `force_ghes` (the value of `GITHUB_ACTIONS_FORCE_GHES` being set).
    pub fn parse_with(input: &str, force_ghes: bool) -> Result<Self, ConfigUrlError> {
        let raw = input.trim().trim_matches('/').to_owned();
        let url = Url::parse(&raw).map_err(|e| ConfigUrlError::Unparsable {
            url: raw.clone(),
            reason: e.to_string(),
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ConfigUrlError::Scheme {
                url: raw,
                scheme: url.scheme().to_owned(),
            });
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => return Err(ConfigUrlError::NoHost { url: raw }),
        };
        let parts: Vec<&str> = url.path().trim_matches('/').split('/').collect();
        let scope_error = || ConfigUrlError::Scope { url: raw.clone() };
        if parts.iter().any(|p| p.is_empty()) || url.query().is_some() || url.fragment().is_some() {
            return Err(scope_error());
        }
        let (scope, enterprise, organization, repository) = match parts.as_slice() {
            [org] => (Scope::Organization, "", *org, ""),
            [first, ent] if first.eq_ignore_ascii_case("enterprises") => {
                (Scope::Enterprise, *ent, "", "")
            }
            [org, repo] => (Scope::Repository, "", *org, *repo),
            _ => return Err(scope_error()),
        };
        let hosted = !force_ghes
            && (host == "github.com"
                || host == "www.github.com"
                || host == "github.localhost"
                || host.ends_with(".ghe.com"));
        Ok(Self {
            enterprise: enterprise.to_owned(),
            organization: organization.to_owned(),
            repository: repository.to_owned(),
            raw,
            url,
            scope,
            hosted,
        })
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// github.com, www.github.com, github.localhost or `*.ghe.com` (and not forced to GHES).
    pub fn is_hosted(&self) -> bool {
        self.hosted
    }

    pub fn enterprise(&self) -> &str {
        &self.enterprise
    }

    pub fn organization(&self) -> &str {
        &self.organization
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The URL as configured (trailing slashes removed).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Hosted: `SCHEME://api.HOST` (`www.github.com` → `api.github.com`); GHES: `SCHEME://HOST/api/v3`.
    /// Without a trailing slash.
    pub fn rest_base_url(&self) -> String {
        let scheme = self.url.scheme();
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        if self.hosted {
            if host.eq_ignore_ascii_case("www.github.com") {
                format!("{scheme}://api.github.com{port}")
            } else {
                format!("{scheme}://api.{host}{port}")
            }
        } else {
            format!("{scheme}://{host}{port}/api/v3")
        }
    }

    /// The REST path (relative to [`Self::rest_base_url`]) that issues a registration token.
    pub fn registration_token_path(&self) -> String {
        match self.scope {
            Scope::Organization => {
                format!(
                    "/orgs/{}/actions/runners/registration-token",
                    self.organization
                )
            }
            Scope::Enterprise => format!(
                "/enterprises/{}/actions/runners/registration-token",
                self.enterprise
            ),
            Scope::Repository => format!(
                "/repos/{}/{}/actions/runners/registration-token",
                self.organization, self.repository
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, force_ghes, scope, ent, org, repo, hosted, rest base)
    type Row = (
        &'static str,
        bool,
        Scope,
        &'static str,
        &'static str,
        &'static str,
        bool,
        &'static str,
    );

    #[test]
    fn url_table() {
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("https://github.com/org", false, Scope::Organization, "", "org", "", true, "https://api.github.com"),
            ("https://github.com/org/", false, Scope::Organization, "", "org", "", true, "https://api.github.com"),
            ("https://github.com/org/repo", false, Scope::Repository, "", "org", "repo", true, "https://api.github.com"),
            ("https://github.com/enterprises/ent", false, Scope::Enterprise, "ent", "", "", true, "https://api.github.com"),
            ("https://github.com/Enterprises/ent/", false, Scope::Enterprise, "ent", "", "", true, "https://api.github.com"),
            ("https://www.github.com/org", false, Scope::Organization, "", "org", "", true, "https://api.github.com"),
            ("https://WWW.GitHub.com/org", false, Scope::Organization, "", "org", "", true, "https://api.github.com"),
            ("http://github.localhost/org/repo", false, Scope::Repository, "", "org", "repo", true, "http://api.github.localhost"),
            ("https://acme.ghe.com/enterprises/acme", false, Scope::Enterprise, "acme", "", "", true, "https://api.acme.ghe.com"),
            ("https://ghes.example.com/org", false, Scope::Organization, "", "org", "", false, "https://ghes.example.com/api/v3"),
            ("https://ghes.example.com:8443/org/repo", false, Scope::Repository, "", "org", "repo", false, "https://ghes.example.com:8443/api/v3"),
            ("http://127.0.0.1:3000/enterprises/e", false, Scope::Enterprise, "e", "", "", false, "http://127.0.0.1:3000/api/v3"),
            ("https://github.com/org", true, Scope::Organization, "", "org", "", false, "https://github.com/api/v3"),
            ("https://acme.ghe.com/org", true, Scope::Organization, "", "org", "", false, "https://acme.ghe.com/api/v3"),
        ];
        for (input, force, scope, ent, org, repo, hosted, rest) in table {
            let u = GitHubConfigUrl::parse_with(input, *force)
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(u.scope(), *scope, "{input}");
            assert_eq!(u.enterprise(), *ent, "{input}");
            assert_eq!(u.organization(), *org, "{input}");
            assert_eq!(u.repository(), *repo, "{input}");
            assert_eq!(u.is_hosted(), *hosted, "{input}");
            assert_eq!(u.rest_base_url(), *rest, "{input}");
        }
    }

    #[test]
    fn registration_paths_and_raw() {
        let u = GitHubConfigUrl::parse_with("https://github.com/o/r/", false).unwrap();
        assert_eq!(u.as_str(), "https://github.com/o/r");
        assert_eq!(
            u.registration_token_path(),
            "/repos/o/r/actions/runners/registration-token"
        );
        let u = GitHubConfigUrl::parse_with("https://github.com/o", false).unwrap();
        assert_eq!(
            u.registration_token_path(),
            "/orgs/o/actions/runners/registration-token"
        );
        let u = GitHubConfigUrl::parse_with("https://github.com/enterprises/e", false).unwrap();
        assert_eq!(
            u.registration_token_path(),
            "/enterprises/e/actions/runners/registration-token"
        );
    }

    #[test]
    fn invalid_urls_are_rejected_clearly() {
        for bad in [
            "",
            "github.com/org",
            "not a url",
            "ftp://github.com/org",
            "https://github.com",
            "https://github.com/",
            "https://github.com/a/b/c",
            "https://github.com/a//b",
            "https://github.com/org?x=1",
        ] {
            let err = GitHubConfigUrl::parse_with(bad, false).unwrap_err();
            assert!(err.to_string().contains("config URL"), "{bad}: {err}");
        }
        let err = GitHubConfigUrl::parse_with("https://github.com/a/b/c", false).unwrap_err();
        assert!(err.to_string().contains("enterprise"), "{err}");
    }

    #[test]
    fn force_ghes_env_helper_reads_process_env() {
        // Only reads; never mutates the environment (tests run in parallel).
        assert_eq!(
            force_ghes_from_env(),
            std::env::var_os(FORCE_GHES_ENV).is_some()
        );
    }
}
