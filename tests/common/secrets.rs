//! Distinctive secrets for the tests that prove no secret reaches a log or an error, and the
//! search for them.
//!
//! Each secret holds an alphanumeric run of 10 or more characters found in no other text (its
//! marker), so it is found whether it was written raw, percent-encoded or escaped; its base64
//! form and the HTTP basic credentials built from it (RFC 7617; the OAuth2 client's, RFC 6749
//! §2.3.1) are searched as well.

use base64::{engine::general_purpose::STANDARD, Engine as _};

/// Secrets written into the config file as they are: (placeholder, value).
pub const LITERAL: &[(&str, &str)] = &[
    ("SSE_QUERY_KEY", "SseApiKeyQ7X4"),
    ("SSE_USERINFO", "SseUserinfoPwR5"),
    ("HEADER_API_KEY", "HdrApiKeyM7wX"),
    ("BASIC_PASSWORD", "RestBasicPwL4q"),
    ("REST_AUTH_KEY", "RestAuthKeyH8d"),
    ("WS_URL_TOKEN", "WsUrlTokenB9k"),
    ("WS_HEADER_TOKEN", "WsHeaderTokF3s"),
    ("GITHUB_SECRET", "GhHookSecretP2r"),
    ("STRIPE_SECRET", "whsec_StripeHookSecN6u"),
];

/// Secrets the config references as `${env:NAME}`: (variable, value).
pub const FROM_ENV: &[(&str, &str)] = &[
    // A path segment, as Telegram's bot token.
    ("TRIB_LOG_PATH_TOKEN", "4242:SsePathTokenN8V"),
    // A query parameter whose name says nothing (`appid`), with characters a URL encodes.
    ("TRIB_LOG_APPID", "SseAppId9K2Wz y/"),
    ("TRIB_LOG_BEARER", "HdrBearerTokJ6p"),
    ("TRIB_LOG_OAUTH_SECRET", "OauthClientSecT5n&+"),
    ("TRIB_LOG_REST_OAUTH_SECRET", "RestOauthSecretV2m"),
    ("TRIB_LOG_REST_QUERY", "RestQueryValueC3z"),
    ("TRIB_LOG_WS_SUB", "WsSubscribeSecG8y"),
    ("TRIB_LOG_HMAC", "HmacHookSecretW5t"),
    ("TRIB_LOG_SASL", "KafkaSaslPasswordD4j"),
];

/// The token endpoint issues `<ACCESS_TOKEN><n>`: secrets too.
pub const ACCESS_TOKEN: &str = "OauthAccessTokenE4b";
/// The user of the REST source's basic auth.
pub const BASIC_USER: &str = "basic-user";
/// The user in an SSE URL's user info.
pub const URL_USER: &str = "feed-user";
/// The OAuth2 client id.
pub const OAUTH_CLIENT: &str = "oauth-client";

/// The value of secret `name` (a placeholder of [`LITERAL`] or a variable of [`FROM_ENV`]).
pub fn literal(name: &str) -> &'static str {
    LITERAL
        .iter()
        .chain(FROM_ENV)
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

/// The secret's longest alphanumeric run.
pub fn marker(value: &str) -> &str {
    let marker = value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .max_by_key(|run| run.len())
        .unwrap();
    assert!(marker.len() >= 10, "`{value}` needs a longer marker");
    marker
}

/// Every text that must not appear: (which secret, the text).
pub fn forbidden() -> Vec<(String, String)> {
    let secrets = LITERAL
        .iter()
        .chain(FROM_ENV)
        .copied()
        .chain([("ACCESS_TOKEN", ACCESS_TOKEN)]);
    let mut forms = Vec::new();
    for (name, value) in secrets {
        forms.push((name.to_owned(), marker(value).to_owned()));
        forms.push((format!("{name} in base64"), STANDARD.encode(value)));
    }
    // HTTP basic credentials (RFC 7617); the OAuth2 client form-encodes its id and secret
    // first (RFC 6749 §2.3.1).
    let oauth_secret: String =
        url::form_urlencoded::byte_serialize(literal("TRIB_LOG_OAUTH_SECRET").as_bytes()).collect();
    for (name, user, password) in [
        ("BASIC_PASSWORD", BASIC_USER, literal("BASIC_PASSWORD")),
        ("SSE_USERINFO", URL_USER, literal("SSE_USERINFO")),
        ("TRIB_LOG_OAUTH_SECRET", OAUTH_CLIENT, &oauth_secret),
    ] {
        let credentials = STANDARD.encode(format!("{user}:{password}"));
        forms.push((format!("{name} in basic credentials"), credentials));
    }
    forms
}

/// Fails the test, naming each secret and quoting its lines, if `text` holds any secret.
pub fn assert_no_secret(text: &str, what: &str) {
    let mut leaks = Vec::new();
    for (secret, form) in forbidden() {
        for line in text.lines().filter(|line| line.contains(&form)) {
            leaks.push(format!("{secret}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets appear in {what}:\n{}",
        leaks.join("\n")
    );
}

/// `template` with each `{PLACEHOLDER}` of [`LITERAL`] replaced by its secret.
pub fn fill(template: &str) -> String {
    LITERAL
        .iter()
        .fold(template.to_owned(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
}
