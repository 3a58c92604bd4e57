//! TLS trust (rustls + ring) and proxy selection from the environment.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

use crate::error::Error;

/// Build the rustls configuration: the system's native roots (webpki-roots when there are
/// none), plus every certificate of `extra_roots_pem` (`server_root_ca`). Uses the ring
/// provider explicitly; no process-default provider is installed.
pub fn tls_config(extra_roots_pem: Option<&str>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::debug!("no native root certificates found, using webpki-roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(pem) = extra_roots_pem.filter(|p| !p.trim().is_empty()) {
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::InvalidConfig {
                reason: format!("server_root_ca is not valid PEM: {e}"),
            })?;
            roots.add(cert).map_err(|e| Error::InvalidConfig {
                reason: format!("server_root_ca holds an unusable certificate: {e}"),
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(Error::InvalidConfig {
                reason: "server_root_ca holds no PEM CERTIFICATE block".into(),
            });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidConfig {
            reason: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Proxy settings as read from `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy` and
/// `NO_PROXY`/`no_proxy`. Like Go's `httpproxy.FromEnvironment` (which the Go listener uses): the
/// upper-case name wins when both are set and non-empty; `localhost` and loopback addresses
/// are never proxied.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    pub http_proxy: Option<Url>,
    pub https_proxy: Option<Url>,
    pub no_proxy: Vec<String>,
}

impl std::fmt::Debug for ProxyConfig {
    // Proxy URLs may carry user:password; show hosts only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |u: &Option<Url>| u.as_ref().map(crate::error::redact_url);
        f.debug_struct("ProxyConfig")
            .field("http_proxy", &show(&self.http_proxy))
            .field("https_proxy", &show(&self.https_proxy))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxyConfig {
    /// Read the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read from any lookup (a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |upper: &str, lower: &str| {
            lookup(upper)
                .filter(|v| !v.is_empty())
                .or_else(|| lookup(lower).filter(|v| !v.is_empty()))
        };
        let parse = |name: &str, v: Option<String>| -> Result<Option<Url>, Error> {
            let Some(v) = v else { return Ok(None) };
            let with_scheme = if v.contains("://") {
                v.clone()
            } else {
                format!("http://{v}")
            };
            let url = Url::parse(&with_scheme).map_err(|e| Error::InvalidConfig {
                reason: format!("{name} is not a valid proxy URL: {e}"),
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(Error::InvalidConfig {
                    reason: format!("{name} must be an http or https proxy URL with a host"),
                });
            }
            Ok(Some(url))
        };
        Ok(Self {
            http_proxy: parse("http_proxy", get("HTTP_PROXY", "http_proxy"))?,
            https_proxy: parse("https_proxy", get("HTTPS_PROXY", "https_proxy"))?,
            no_proxy: get("NO_PROXY", "no_proxy")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.http_proxy.is_none() && self.https_proxy.is_none()
    }

    /// The proxy to use for `target`, or `None` for a direct connection.
    pub fn proxy_for(&self, target: &Url) -> Option<Url> {
        let proxy = match target.scheme() {
            "https" => self.https_proxy.as_ref()?,
            "http" => self.http_proxy.as_ref()?,
            _ => return None,
        };
        let host = target
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        if host == "localhost" {
            return None;
        }
        let ip: Option<std::net::IpAddr> = host.parse().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        let port = target.port_or_known_default();
        for entry in &self.no_proxy {
            if no_proxy_matches(entry, &host, ip, port) {
                return None;
            }
        }
        Some(proxy.clone())
    }
}

fn no_proxy_matches(
    entry: &str,
    host: &str,
    ip: Option<std::net::IpAddr>,
    port: Option<u16>,
) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        let (Ok(net), Ok(bits), Some(ip)) =
            (net.parse::<std::net::IpAddr>(), bits.parse::<u8>(), ip)
        else {
            return false;
        };
        return cidr_contains(net, bits, ip);
    }
    if let Ok(entry_ip) = entry
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return ip == Some(entry_ip);
    }
    // host or host:port; a leading "*." or "." means subdomains only.
    let (entry_host, entry_port) = match entry.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h, p.parse::<u16>().ok())
        }
        _ => (entry, None),
    };
    if entry_port.is_some() && entry_port != port {
        return false;
    }
    let entry_host = entry_host.strip_prefix('*').unwrap_or(entry_host);
    if let Some(suffix) = entry_host.strip_prefix('.') {
        return host.ends_with(&format!(".{suffix}"));
    }
    host == entry_host || host.ends_with(&format!(".{entry_host}"))
}

fn cidr_contains(net: std::net::IpAddr, bits: u8, ip: std::net::IpAddr) -> bool {
    match (net, ip) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> ProxyConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn pick(c: &ProxyConfig, target: &str) -> Option<String> {
        c.proxy_for(&Url::parse(target).unwrap())
            .map(|u| u.to_string())
    }

    #[test]
    fn scheme_selects_proxy_and_case_order() {
        // (environment, target, the proxy picked)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
        #[rustfmt::skip]
        let cases: [Case; 5] = [
            (&[("https_proxy", "proxy.corp:3128"), ("http_proxy", "http://plain:80")], "https://api.github.com/x", Some("http://proxy.corp:3128/")),
            (&[("https_proxy", "proxy.corp:3128"), ("http_proxy", "http://plain:80")], "http://ghes.local/x", Some("http://plain/")),
            (&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "http://lower:2")], "https://github.com", Some("http://upper:1/")),
            (&[("HTTPS_PROXY", ""), ("https_proxy", "http://lower:2")], "https://github.com", Some("http://lower:2/")),
            // https uses https_proxy only
            (&[("http_proxy", "http://plain:80")], "https://github.com", None),
        ];
        for (env, target, want) in cases {
            assert_eq!(pick(&cfg(env), target).as_deref(), want, "{env:?} {target}");
        }
        assert!(cfg(&[]).is_empty());
    }

    #[test]
    fn no_proxy_rules() {
        let c = cfg(&[
            ("https_proxy", "http://p:3128"),
            (
                "no_proxy",
                "internal.corp, .svc,*.cluster.local,10.0.0.0/8,192.168.1.7,ghes.example:8443",
            ),
        ]);
        assert_eq!(pick(&c, "https://internal.corp/"), None);
        assert_eq!(pick(&c, "https://a.internal.corp/"), None);
        assert_eq!(pick(&c, "https://svc/"), Some("http://p:3128/".into()));
        assert_eq!(pick(&c, "https://x.svc/"), None);
        assert_eq!(pick(&c, "https://x.cluster.local/"), None);
        assert_eq!(pick(&c, "https://10.2.3.4/"), None);
        assert_eq!(pick(&c, "https://11.2.3.4/"), Some("http://p:3128/".into()));
        assert_eq!(pick(&c, "https://192.168.1.7/"), None);
        assert_eq!(pick(&c, "https://ghes.example:8443/"), None);
        assert_eq!(
            pick(&c, "https://ghes.example/"),
            Some("http://p:3128/".into())
        );
        assert_eq!(
            pick(&c, "https://api.github.com/"),
            Some("http://p:3128/".into())
        );
        // loopback is never proxied (as Go's httpproxy)
        assert_eq!(pick(&c, "https://127.0.0.1:9/"), None);
        assert_eq!(pick(&c, "https://localhost/"), None);
        assert_eq!(pick(&c, "https://[::1]:9/"), None);
        let all = cfg(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "*")]);
        assert_eq!(pick(&all, "https://github.com"), None);
    }

    #[test]
    fn bad_proxy_is_a_clear_error_without_credentials() {
        let err =
            ProxyConfig::from_lookup(|k| (k == "https_proxy").then(|| "socks5://u:pw@h:1".into()))
                .unwrap_err();
        assert!(err.to_string().contains("https_proxy"), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
        let c = cfg(&[("https_proxy", "http://user:hunter2@p:1")]);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn tls_config_accepts_roots_and_rejects_garbage() {
        assert!(tls_config(None).is_ok());
        assert!(tls_config(Some("")).is_ok());
        let err = tls_config(Some("not a pem")).unwrap_err();
        assert!(err.to_string().contains("server_root_ca"), "{err}");
    }
}
