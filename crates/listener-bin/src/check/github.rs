//! GitHub: the credentials (registration token), the Actions service (runner registration,
//! admin token), and the scale set, each read-only. No message session is created: a
//! second session would conflict (409) with the running listener's.

use github_client::{ActionsClient, Error};

use super::report::Check;
use crate::settings::Settings;

const CREDENTIALS: &str = "credentials";
const REGISTRATION_TOKEN: &str = "github-registration-token";
const RUNNER_REGISTRATION: &str = "actions-service";
const SCALE_SET: &str = "scale-set";
/// This module's checks, in the order they run.
pub const NAMES: &[&str] = &[
    CREDENTIALS,
    REGISTRATION_TOKEN,
    RUNNER_REGISTRATION,
    SCALE_SET,
];

/// The credentials read, then GitHub asked for a registration token, the Actions
/// service connection, and the scale set; a failure skips what depends on it.
pub async fn checks(settings: &Settings) -> Vec<Check> {
    let config = &settings.config;
    let mut checks = Vec::new();
    let skip_rest = |checks: &mut Vec<Check>, from: usize, why: &str| {
        for &name in &NAMES[1 + from..] {
            checks.push(Check::skip(name, format!("not checked: {why}")));
        }
    };

    let credentials = match settings.credentials.load().await {
        Ok(credentials) => credentials,
        Err(e) => {
            checks.push(Check::fail(
                CREDENTIALS,
                e.to_string(),
                "set github_token, or github_app_id, github_app_installation_id and github_app_private_key (or the vault keys) in config.json",
            ));
            skip_rest(&mut checks, 0, "no credentials");
            return checks;
        }
    };
    let kind = match &credentials {
        github_client::Credentials::Token(_) => "personal access token",
        github_client::Credentials::App { .. } => "GitHub App",
    };
    checks.push(Check::ok(CREDENTIALS, format!("read ({kind})")));

    let client = match ActionsClient::new(
        &config.configure_url,
        credentials,
        settings.client_options.clone(),
    ) {
        Ok(client) => client,
        Err(e) => {
            checks.push(Check::fail(REGISTRATION_TOKEN, e.to_string(), fix_for(&e)));
            skip_rest(&mut checks, 1, "no GitHub client");
            return checks;
        }
    };

    if let Err(e) = client.check_registration_token().await {
        checks.push(Check::fail(REGISTRATION_TOKEN, e.to_string(), fix_for(&e)));
        skip_rest(&mut checks, 1, "GitHub did not issue a registration token");
        return checks;
    }
    checks.push(Check::ok(
        REGISTRATION_TOKEN,
        format!(
            "{} issued a runner registration token for {}",
            client.rest_base_url(),
            config.configure_url
        ),
    ));

    match client.connect().await {
        Ok(service_url) => checks.push(Check::ok(
            RUNNER_REGISTRATION,
            format!("runner registration answered with the Actions service {service_url} and an admin token"),
        )),
        Err(e) => {
            checks.push(Check::fail(RUNNER_REGISTRATION, e.to_string(), fix_for(&e)));
            skip_rest(&mut checks, 2, "no Actions service connection");
            return checks;
        }
    }

    let id = config.runner_scale_set_id;
    checks.push(match client.get_runner_scale_set(id).await {
        Ok(set) if !config.runner_scale_set_name.is_empty()
            && set.name != config.runner_scale_set_name =>
        {
            Check::fail(
                SCALE_SET,
                format!(
                    "scale set {id} is named {:?}, config key `runner_scale_set_name` says {:?}",
                    set.name, config.runner_scale_set_name
                ),
                "config keys `runner_scale_set_id` and `runner_scale_set_name` must name the same scale set",
            )
        }
        Ok(set) => Check::ok(
            SCALE_SET,
            format!(
                "scale set {id} ({}) exists in runner group {:?}",
                set.name, set.runner_group_name
            ),
        ),
        Err(e @ Error::NotFound(_)) => Check::fail(
            SCALE_SET,
            format!("config key `runner_scale_set_id`: no scale set {id}: {e}"),
            "set `runner_scale_set_id` to an existing scale set's id (ARC's controller writes it; reinstall the scale set if it was deleted)",
        ),
        Err(e) => Check::fail(SCALE_SET, e.to_string(), fix_for(&e)),
    });
    checks
}

/// What an operator changes for each way GitHub can fail.
fn fix_for(error: &Error) -> &'static str {
    match error {
        Error::ConfigUrl(_) => {
            "config key `configure_url` must be https://<github host>/<enterprises/name | org | org/repo>"
        }
        Error::InvalidConfig { .. } => {
            "check `server_root_ca` (PEM), `github_app_private_key` (PEM) and the proxy variables (https_proxy, no_proxy)"
        }
        Error::CredentialsRejected(_) | Error::TokenExpired(_) => {
            "GitHub rejected the credentials: renew the token (or the App's key) in the config secret and check it may manage self-hosted runners of the configure_url's org/repo/enterprise"
        }
        Error::NotFound(_) => {
            "config key `configure_url` names an enterprise, org or repository this GitHub does not know, or the credentials cannot see it"
        }
        Error::Transport { tls: true, .. } => {
            "the TLS handshake failed: set `server_root_ca` to the CA of your GitHub Enterprise Server or of the proxy that intercepts TLS"
        }
        Error::Transport { .. } => {
            "GitHub is unreachable: check DNS, network policy and the proxy variables (https_proxy, no_proxy)"
        }
        _ => "GitHub answered unexpectedly: see the detail, and retry later if it is an outage",
    }
}
