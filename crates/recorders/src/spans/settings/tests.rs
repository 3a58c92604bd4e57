use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The settings of `config` and the variables `e`, with the default id scheme.
fn resolve_env(
    config: Option<&str>,
    insecure: bool,
    e: &[(&str, &str)],
) -> Result<Option<OtelSettings>, RecorderError> {
    OtelSettings::resolve(config, insecure, IdScheme::default(), &env(e))
}

/// The message of the error that resolving `config` and the variables `e` gives.
fn resolve_error(config: Option<&str>, insecure: bool, e: &[(&str, &str)]) -> String {
    resolve_env(config, insecure, e).unwrap_err().to_string()
}

fn endpoint(config: Option<&str>, insecure: bool, e: &[(&str, &str)]) -> Option<String> {
    resolve_env(config, insecure, e)
        .unwrap()
        .map(|s| s.endpoint.to_string())
}

#[test]
fn no_endpoint_means_no_exporter() {
    assert!(endpoint(None, false, &[]).is_none());
    assert!(endpoint(Some("  "), true, &[("OTEL_ENDPOINT", "")]).is_none());
}

#[test]
fn endpoint_forms_and_precedence() {
    type Case<'a> = (Option<&'a str>, bool, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 9] = [
        (
            Some("collector:4318"),
            true,
            &[],
            "http://collector:4318/v1/traces",
        ),
        (
            Some("collector:4318"),
            false,
            &[],
            "https://collector:4318/v1/traces",
        ),
        (
            Some("http://c:4318/"),
            false,
            &[],
            "http://c:4318/v1/traces",
        ),
        (
            Some("https://c/otlp/v1/traces"),
            true,
            &[],
            "https://c/otlp/v1/traces",
        ),
        (
            Some("https://c/otlp"),
            true,
            &[],
            "https://c/otlp/v1/traces",
        ),
        (
            None,
            true,
            &[("OTEL_ENDPOINT", "seed:4318")],
            "http://seed:4318/v1/traces",
        ),
        (
            None,
            false,
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318"),
            ],
            "http://t:4318/custom",
        ),
        (
            None,
            false,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318/base/")],
            "http://g:4318/base/v1/traces",
        ),
        (
            Some("http://cfg:1"),
            false,
            &[("OTEL_ENDPOINT", "http://seed:2")],
            "http://cfg:1/v1/traces",
        ),
    ];
    for (config, insecure, e, want) in cases {
        assert_eq!(
            endpoint(config, insecure, e).as_deref(),
            Some(want),
            "{config:?} {e:?}"
        );
    }
}

#[test]
fn bad_endpoints_are_clear_errors() {
    let err = resolve_error(Some("ftp://x:1"), false, &[]);
    assert!(
        err.contains("otel_endpoint") && err.contains("http or https"),
        "{err}"
    );
    let err = resolve_error(
        None,
        false,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[bad")],
    );
    assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
}

#[test]
fn headers_timeout_and_resource() {
    let s = OtelSettings::resolve(
        Some("c:4318"),
        true,
        IdScheme::RunnerContract,
        &env(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "authorization=Bearer%20s3cret, x-tenant = acme",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,deployment.environment=prod",
            ),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        s.headers,
        [
            ("authorization".to_owned(), "Bearer s3cret".to_owned()),
            ("x-tenant".to_owned(), "acme".to_owned())
        ]
    );
    assert_eq!(s.timeout, Duration::from_millis(2500));
    assert_eq!(s.service_name, "from-attrs");
    assert_eq!(
        s.resource_attributes,
        [("deployment.environment".to_owned(), "prod".to_owned())]
    );
    assert_eq!(s.id_scheme, IdScheme::RunnerContract);
    let debug = format!("{s:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("authorization: <redacted>"), "{debug}");

    let s = resolve_env(
        Some("c:4318"),
        true,
        &[
            ("OTEL_SERVICE_NAME", "svc"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "nonsense"),
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(s.service_name, "svc");
    assert_eq!(s.timeout, Duration::from_millis(100));
    let s = resolve_env(Some("c:1"), true, &[]).unwrap().unwrap();
    assert_eq!(s.service_name, "gha-listener");
    assert_eq!(s.timeout, Duration::from_secs(10));
    assert!(s.headers.is_empty());

    let err = resolve_error(
        Some("c:1"),
        true,
        &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization")],
    );
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_HEADERS") && err.contains("key=value"),
        "{err}"
    );
    let err = resolve_error(Some("c:1"), true, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "5s")]);
    assert!(err.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{err}");
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz"), "%zz");
}

#[test]
fn transport_variables_and_their_errors_name_the_variable() {
    let resolve = |e: &[(&str, &str)]| resolve_env(Some("c:1"), true, e);
    let s = resolve(&[]).unwrap().unwrap();
    assert_eq!(s.transport.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(s.transport.compression, OtlpCompression::None);
    assert!(s.transport.extra_roots.is_empty() && s.transport.client_identity.is_none());

    let s = resolve(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(s.transport.protocol, OtlpProtocol::HttpJson);
    assert_eq!(
        s.transport.compression,
        OtlpCompression::None,
        "TRACES_ wins"
    );

    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    // Each variable, set alone to `value`, is named by the error, which says `reason`.
    for (name, value, reason) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "grpc is not supported",
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", "http/json"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "gzip or none"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing, "cannot read"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            not_pem,
            "no PEM certificate",
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            not_pem,
            "CLIENT_KEY",
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            not_pem,
            "CLIENT_CERTIFICATE",
        ),
    ] {
        let vars = [(name, value)];
        let err = match resolve(&vars) {
            Ok(_) => panic!("{vars:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(name) && err.contains(reason),
            "{vars:?}: {err}"
        );
    }
}
