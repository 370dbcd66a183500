use secrecy::{ExposeSecret, SecretString};

use super::{check_proxy_url, Network, ProxyRules, TlsConfig};

fn url(text: &str) -> url::Url {
    text.parse().unwrap()
}

fn var(name: &'static str, value: &str) -> Option<(&'static str, String)> {
    Some((name, value.to_owned()))
}

fn proxied(rules: &ProxyRules, target: &str) -> Option<String> {
    rules
        .for_url(&url(target))
        .map(|proxy| proxy.expose_secret().to_owned())
}

#[test]
fn the_environment_picks_the_proxy_by_scheme_websocket_urls_included() {
    let rules = ProxyRules::from_environment(
        None,
        var("HTTP_PROXY", "http://plain:3128"),
        var("HTTPS_PROXY", "http://secure:3128"),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        proxied(&rules, "http://api.example.com/x").as_deref(),
        Some("http://plain:3128")
    );
    assert_eq!(
        proxied(&rules, "ws://api.example.com/x").as_deref(),
        Some("http://plain:3128")
    );
    assert_eq!(
        proxied(&rules, "https://api.example.com/x").as_deref(),
        Some("http://secure:3128")
    );
    assert_eq!(
        proxied(&rules, "wss://api.example.com/x").as_deref(),
        Some("http://secure:3128")
    );
}

#[test]
fn all_proxy_fills_in_for_the_scheme_without_its_own() {
    let rules = ProxyRules::from_environment(
        var("ALL_PROXY", "http://all:3128"),
        None,
        var("HTTPS_PROXY", "http://secure:3128"),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        proxied(&rules, "http://a.example/").as_deref(),
        Some("http://all:3128")
    );
    assert_eq!(
        proxied(&rules, "https://a.example/").as_deref(),
        Some("http://secure:3128")
    );
}

#[test]
fn only_https_proxy_leaves_plain_http_direct() {
    let rules = ProxyRules::from_environment(None, None, var("HTTPS_PROXY", "http://s:1"), None)
        .unwrap()
        .unwrap();
    assert_eq!(proxied(&rules, "http://a.example/"), None);
    assert!(proxied(&rules, "https://a.example/").is_some());
}

#[test]
fn no_proxy_hosts_domains_and_ranges_are_reached_directly() {
    let rules = ProxyRules::from_environment(
        var("ALL_PROXY", "http://p:3128"),
        None,
        None,
        var("NO_PROXY", "internal.example, 10.0.0.0/8 ,localhost"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(proxied(&rules, "https://internal.example/"), None);
    assert_eq!(proxied(&rules, "https://api.internal.example/"), None);
    assert_eq!(proxied(&rules, "http://10.1.2.3:8080/"), None);
    assert_eq!(proxied(&rules, "wss://localhost/"), None);
    assert!(proxied(&rules, "https://notinternal.example/").is_some());
}

#[test]
fn an_environment_without_proxies_means_direct() {
    assert!(
        ProxyRules::from_environment(None, None, None, var("NO_PROXY", "*"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_bad_proxy_in_the_environment_names_its_variable() {
    let error = ProxyRules::from_environment(None, None, var("HTTPS_PROXY", "socks5://p:1"), None)
        .err()
        .unwrap();
    assert_eq!(error.0, "HTTPS_PROXY");
    assert!(error.1.contains("only HTTP proxies"), "{}", error.1);
}

#[test]
fn a_configured_proxy_takes_every_url_no_proxy_notwithstanding() {
    let rules = ProxyRules::fixed(SecretString::from("http://u:p@proxy:3128"));
    for target in ["http://localhost/", "https://10.0.0.1/", "wss://x.example/"] {
        assert_eq!(
            proxied(&rules, target).as_deref(),
            Some("http://u:p@proxy:3128")
        );
    }
}

#[test]
fn proxy_urls_are_http_with_a_host_and_no_path() {
    assert!(check_proxy_url("http://proxy:3128").is_ok());
    assert!(check_proxy_url("http://user:pa%40ss@proxy:3128/").is_ok());
    for bad in [
        "https://proxy:3128",
        "socks5h://proxy:1080",
        "proxy:3128",
        "http://proxy:3128/path",
        "http://:3128",
    ] {
        assert!(check_proxy_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn proxy_none_is_direct_and_a_bad_proxy_names_the_field_without_its_secret() {
    let none = Network::new(Some(&SecretString::from("none")), None).unwrap();
    assert!(none.proxy_for(&url("https://a.example/")).is_none());
    let errors = Network::new(Some(&SecretString::from("ftp://u:hunter2@p:21")), None).unwrap_err();
    assert_eq!(errors[0].field, "proxy");
    assert!(
        !errors[0].problem.contains("hunter2"),
        "{}",
        errors[0].problem
    );
}

#[test]
fn tls_files_that_are_missing_empty_or_unpaired_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not pem\n").unwrap();
    let config = TlsConfig {
        ca_file: Some(dir.path().join("missing.pem")),
        cert_file: Some(empty.clone()),
        key_file: None,
    };
    let errors = Network::new(Some(&SecretString::from("none")), Some(&config)).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
    assert_eq!(fields, ["tls.ca_file", "tls.key_file"], "{errors:?}");
    let config = TlsConfig {
        ca_file: Some(empty.clone()),
        cert_file: Some(empty.clone()),
        key_file: Some(empty),
    };
    let errors = Network::new(Some(&SecretString::from("none")), Some(&config)).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        ["tls.ca_file", "tls.cert_file", "tls.key_file"],
        "{errors:?}"
    );
    assert!(
        errors[0].problem.contains("no PEM certificate"),
        "{:?}",
        errors[0]
    );
}
