//! Unit tests of the signature schemes: the recorded provider vectors, Stripe's documented
//! scheme, timestamps, rotation, and that secrets never show.

use super::*;
use http::HeaderValue;
use serde_json::Value;

/// GitHub and Standard Webhooks vectors, checked with the providers' official libraries;
/// origin and licences in `tests/data/webhook-signatures/SOURCE.txt`.
const VECTORS: &str = include_str!("../../../tests/data/webhook-signatures/vectors.json");
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: u64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;
type Verdict = Result<Verified, Rejection>;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn secrets(texts: &[&str]) -> Vec<SecretString> {
    texts.iter().map(|&text| text.into()).collect()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

/// `scheme`'s verdict on a request with header `pairs` and `body`, at `NOW`.
fn verify(scheme: &SignatureScheme, pairs: &[(&str, &str)], body: &[u8]) -> Verdict {
    scheme.verify(&headers(pairs), body, at(NOW))
}

fn github(texts: &[&str]) -> SignatureScheme {
    SignatureScheme::GitHub(GitHubScheme::try_new(&secrets(texts)).unwrap())
}

fn stripe(texts: &[&str]) -> SignatureScheme {
    let tolerance = DEFAULT_TIMESTAMP_TOLERANCE;
    SignatureScheme::Stripe(StripeScheme::try_new(&secrets(texts), tolerance).unwrap())
}

fn standard(texts: &[&str]) -> SignatureScheme {
    let tolerance = DEFAULT_TIMESTAMP_TOLERANCE;
    let scheme = StandardWebhooksScheme::try_new(&secrets(texts), tolerance).unwrap();
    SignatureScheme::StandardWebhooks(scheme)
}

fn generic(encoding: SignatureEncoding, prefix: Option<&str>) -> GenericHmacScheme {
    let shared = secrets(&["generic-secret"]);
    GenericHmacScheme::try_new(&shared, "X-Signature", encoding, prefix).unwrap()
}

fn standard_request(id: &str, timestamp: u64, signature: &str) -> HeaderMap {
    let timestamp = timestamp.to_string();
    let pairs = [(WEBHOOK_ID, id), (WEBHOOK_TIMESTAMP, &timestamp)];
    headers(&[pairs[0], pairs[1], (WEBHOOK_SIGNATURE, signature)])
}

fn mismatch(header: &str) -> Verdict {
    let header = header.to_owned();
    Err(Rejection::SignatureMismatch { header })
}

fn missing(header: &str) -> Verdict {
    let header = header.to_owned();
    Err(Rejection::MissingHeader { header })
}

fn assert_malformed(verdict: Verdict, case: &str) {
    let malformed = matches!(verdict, Err(Rejection::MalformedHeader { .. }));
    assert!(malformed, "{case}: {verdict:?}");
}

/// The signature in a header value: what follows its last `=` or `,`.
fn signature_of(value: &str) -> &str {
    value
        .trim_end_matches('=')
        .rsplit(['=', ','])
        .next()
        .unwrap()
}

#[test]
fn every_vector_gives_its_verdict() {
    let all: Value = serde_json::from_str(VECTORS).unwrap();
    for kind in ["github_x_hub_signature_256", "standard_webhooks"] {
        let vectors = all[kind].as_array().expect(kind);
        assert!(!vectors.is_empty(), "vectors.json has no `{kind}` vectors");
        for vector in vectors {
            let text = |key: &str| vector[key].as_str().unwrap();
            let (name, secret, body) = (text("name"), text("secret"), text("body").as_bytes());
            let sent = vector["header"].as_object().unwrap();
            let header = |key: &str| sent[key].as_str().unwrap();
            let pairs: Vec<_> = sent.keys().map(|key| (key.as_str(), header(key))).collect();
            let (verdict, signature, signed) = if kind == "standard_webhooks" {
                // The vectors' timestamps are years old: verify at each vector's own time.
                let (id, timestamp) = (header(WEBHOOK_ID), header(WEBHOOK_TIMESTAMP));
                let timestamp: u64 = timestamp.parse().unwrap();
                let verdict = standard(&[secret]).verify(&headers(&pairs), body, at(timestamp));
                if let Ok(verified) = &verdict {
                    assert_eq!(verified.delivery_id.as_deref(), Some(id), "{name}");
                    assert_eq!(verified.signed_at, Some(at(timestamp)), "{name}");
                }
                let signed = StandardWebhooksScheme::sign(secret, id, timestamp, body);
                (verdict, header(WEBHOOK_SIGNATURE), signed.unwrap())
            } else {
                let verdict = verify(&github(&[secret]), &pairs, body);
                let signed = GitHubScheme::sign(secret, body);
                (verdict, header("X-Hub-Signature-256"), signed)
            };
            let valid = vector["valid"].as_bool().unwrap();
            assert_eq!(verdict.is_ok(), valid, "{name}: {verdict:?}");
            // `sign` reproduces exactly the signatures the providers' libraries accepted.
            let reproduced = signature.split(' ').any(|entry| entry == signed);
            assert_eq!(reproduced, valid, "{name}");
        }
    }
}

#[test]
fn github_reads_the_delivery_id_and_rejects_bad_headers() {
    let scheme = github(&["s3cret"]);
    let signature = GitHubScheme::sign("s3cret", BODY);
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let request = [
        ("X-Hub-Signature-256", &*signature),
        ("X-GitHub-Delivery", delivery),
    ];
    let verified = verify(&scheme, &request, BODY).unwrap();
    assert_eq!(verified.delivery_id.as_deref(), Some(delivery));
    assert_eq!((verified.signed_at, verified.secret_index), (None, 0));
    let without_id = verify(&scheme, &[("x-hub-SIGNATURE-256", &signature)], BODY);
    assert_eq!(without_id.unwrap().delivery_id, None);
    assert_eq!(verify(&scheme, &request, b"{}"), mismatch(GITHUB_SIGNATURE));
    assert_eq!(verify(&scheme, &[], BODY), missing(GITHUB_SIGNATURE));
    let digits = signature_of(&signature);
    for bad in [
        digits.to_owned(),
        format!("sha1={digits}"),
        format!("sha256={}", &digits[2..]),
        format!("sha256=zz{}", &digits[2..]),
    ] {
        assert_malformed(verify(&scheme, &[(GITHUB_SIGNATURE, &bad)], BODY), &bad);
    }
    let twice = [
        (GITHUB_SIGNATURE, &*signature),
        (GITHUB_SIGNATURE, &signature),
    ];
    assert_malformed(verify(&scheme, &twice, BODY), "sent twice");
}

#[test]
fn stripe_signs_timestamp_dot_body_and_accepts_any_v1() {
    // Stripe's documented scheme, computed without `sign`: the `whsec_` text is the key.
    let mut expected = Hmac::<Sha256>::new_from_slice(WHSEC.as_bytes()).unwrap();
    expected.update(format!("{NOW}.").as_bytes());
    expected.update(BODY);
    let digits = hex::encode(expected.finalize().into_bytes());
    let value = StripeScheme::sign(WHSEC, NOW, BODY);
    assert_eq!(value, format!("t={NOW},v1={digits}"));

    let scheme = stripe(&[WHSEC]);
    let verified = verify(&scheme, &[("Stripe-Signature", &value)], BODY).unwrap();
    assert_eq!(
        (verified.signed_at, verified.delivery_id),
        (Some(at(NOW)), None)
    );
    let wrong = StripeScheme::sign("whsec_other", NOW, BODY);
    let wrong = signature_of(&wrong);
    for value in [
        format!("t={NOW},v1={wrong},v1={digits}"),
        format!("t={NOW},v0={digits},v1=not-hex,v1={digits}"),
        format!("v1={digits}, t={NOW}, other=ignored"),
    ] {
        let verdict = verify(&scheme, &[(STRIPE_SIGNATURE, &value)], BODY);
        assert!(verdict.is_ok(), "{value}: {verdict:?}");
    }
}

#[test]
fn stripe_rejections() {
    let scheme = stripe(&[WHSEC]);
    let stripe_verify = |value: &str, body| verify(&scheme, &[(STRIPE_SIGNATURE, value)], body);
    let good = StripeScheme::sign(WHSEC, NOW, BODY);
    let digits = signature_of(&good);
    let wrong_secret = StripeScheme::sign("whsec_wrong", NOW, BODY);
    assert_eq!(
        stripe_verify(&wrong_secret, BODY),
        mismatch(STRIPE_SIGNATURE)
    );
    assert_eq!(stripe_verify(&good, b"{}"), mismatch(STRIPE_SIGNATURE));
    let moved = format!("t={},v1={digits}", NOW + 1);
    assert_eq!(
        stripe_verify(&moved, BODY),
        mismatch(STRIPE_SIGNATURE),
        "t= is signed"
    );
    for bad in [
        format!("v1={digits}"),
        format!("t={NOW},v0={digits}"),
        format!("t=soon,v1={digits}"),
        format!("t=,v1={digits}"),
        format!("t={NOW},t={NOW},v1={digits}"),
    ] {
        assert_malformed(stripe_verify(&bad, BODY), &bad);
    }
    let rejection = verify(&scheme, &[], BODY).unwrap_err();
    assert_eq!(rejection.to_string(), "missing header `stripe-signature`");
}

#[test]
fn timestamps_must_be_within_tolerance_both_ways() {
    let stripe_request = headers(&[(STRIPE_SIGNATURE, &StripeScheme::sign(WHSEC, NOW, BODY))]);
    let signature = StandardWebhooksScheme::sign(WHSEC, "msg_1", NOW, BODY).unwrap();
    let cases = [
        (stripe(&[WHSEC]), stripe_request, STRIPE_SIGNATURE),
        (
            standard(&[WHSEC]),
            standard_request("msg_1", NOW, &signature),
            WEBHOOK_TIMESTAMP,
        ),
    ];
    for (scheme, request, header) in cases {
        for now in [NOW - 300, NOW + 300] {
            assert!(
                scheme.verify(&request, BODY, at(now)).is_ok(),
                "{header} at {now}"
            );
        }
        let too_old = scheme.verify(&request, BODY, at(NOW + 301)).unwrap_err();
        let expected = Rejection::TimestampOutsideTolerance {
            header: header.into(),
            timestamp: NOW,
            age_seconds: 301,
            tolerance_seconds: 300,
        };
        assert_eq!(
            (&too_old, too_old.outcome()),
            (&expected, "rejected_timestamp")
        );
        let message = format!(
            "header `{header}`: timestamp `{NOW}` is 301 s old, beyond the tolerance of 300 s"
        );
        assert_eq!(too_old.to_string(), message);
        let future = scheme.verify(&request, BODY, at(NOW - 3600)).unwrap_err();
        assert_eq!(future.outcome(), "rejected_timestamp");
        assert!(
            future.to_string().contains("3600 s in the future"),
            "{future}"
        );
        // A forgery is a signature rejection, however old its timestamp.
        let forged = scheme
            .verify(&request, b"forged", at(NOW + 3600))
            .unwrap_err();
        assert_eq!(forged.outcome(), "rejected_signature");
    }
}

/// Found by the `webhook_signature` fuzz target (fuzz/artifacts/webhook_signature/): with a
/// tolerance of centuries, a signed timestamp past what `SystemTime` holds was accepted and
/// then overflowed `UNIX_EPOCH + timestamp`, a panic in the request handler.
#[test]
fn a_timestamp_past_the_clock_is_refused_whatever_the_tolerance() {
    let far = u64::MAX;
    let stripe_request = headers(&[(STRIPE_SIGNATURE, &StripeScheme::sign(WHSEC, far, BODY))]);
    let signature = StandardWebhooksScheme::sign(WHSEC, "msg_1", far, BODY).unwrap();
    let stripe = StripeScheme::try_new(&secrets(&[WHSEC]), Duration::MAX).unwrap();
    let standard = StandardWebhooksScheme::try_new(&secrets(&[WHSEC]), Duration::MAX).unwrap();
    let cases = [
        (
            SignatureScheme::Stripe(stripe),
            stripe_request,
            STRIPE_SIGNATURE,
        ),
        (
            SignatureScheme::StandardWebhooks(standard),
            standard_request("msg_1", far, &signature),
            WEBHOOK_TIMESTAMP,
        ),
    ];
    for (scheme, request, header) in cases {
        let refused = scheme.verify(&request, BODY, at(NOW)).unwrap_err();
        let expected = Rejection::MalformedHeader {
            header: header.into(),
            problem: "timestamp is later than this system's clock can hold".into(),
        };
        assert_eq!(refused, expected);
    }
}

#[test]
fn standard_webhooks_signs_id_and_timestamp_and_needs_every_header() {
    let scheme = standard(&[WHSEC]);
    let signature = StandardWebhooksScheme::sign(WHSEC, "msg_1", NOW, BODY).unwrap();
    let check = |request: &HeaderMap| scheme.verify(request, BODY, at(NOW));
    let request = standard_request("msg_1", NOW, &signature);
    assert!(check(&request).is_ok());
    let other_id = standard_request("msg_2", NOW, &signature);
    assert_eq!(check(&other_id), mismatch(WEBHOOK_SIGNATURE));
    let other_time = standard_request("msg_1", NOW + 1, &signature);
    assert_eq!(check(&other_time), mismatch(WEBHOOK_SIGNATURE));
    for name in [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE] {
        let mut without = request.clone();
        without.remove(name);
        assert_eq!(check(&without), missing(name));
    }
    let mut negative = request.clone();
    negative.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static("-5"));
    let v1a = signature.replace("v1,", "v1a,");
    assert_malformed(check(&negative), "negative timestamp");
    assert_malformed(check(&standard_request("", NOW, &signature)), "empty id");
    assert_malformed(check(&standard_request("msg_1", NOW, &v1a)), "v1a only");
}

#[test]
fn rotation_accepts_every_active_secret_and_no_removed_one() {
    let old = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0";
    let new = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0";
    let removed = "whsec_cmVtb3ZlZC1yZW1vdmVkLXJlbW92ZWQ=";
    type SignedRequest = fn(&str) -> HeaderMap;
    let cases: [(SignatureScheme, SignedRequest); 3] = [
        (github(&[old, new]), |secret| {
            headers(&[(GITHUB_SIGNATURE, &GitHubScheme::sign(secret, BODY))])
        }),
        (stripe(&[old, new]), |secret| {
            headers(&[(STRIPE_SIGNATURE, &StripeScheme::sign(secret, NOW, BODY))])
        }),
        (standard(&[old, new]), |secret| {
            let signature = StandardWebhooksScheme::sign(secret, "msg_1", NOW, BODY);
            standard_request("msg_1", NOW, &signature.unwrap())
        }),
    ];
    for (scheme, signed_request) in cases {
        let index = |secret| {
            let verdict = scheme.verify(&signed_request(secret), BODY, at(NOW));
            verdict.map(|verified| verified.secret_index)
        };
        assert_eq!((index(old), index(new)), (Ok(0), Ok(1)), "{scheme:?}");
        let rejection = index(removed).unwrap_err();
        assert!(
            matches!(rejection, Rejection::SignatureMismatch { .. }),
            "{rejection}"
        );
    }
}

#[test]
fn generic_hmac_in_hex_and_base64_with_and_without_prefix() {
    for encoding in [SignatureEncoding::Hex, SignatureEncoding::Base64] {
        for prefix in [None, Some("sha256=")] {
            let case = format!("{encoding:?} {prefix:?}");
            let generic = generic(encoding, prefix);
            let value = generic.sign("generic-secret", BODY);
            let other = generic.sign("other-secret", BODY);
            let scheme = SignatureScheme::GenericHmac(generic);
            let check = |value: &str, body| verify(&scheme, &[("x-signature", value)], body);
            assert_eq!(value.starts_with("sha256="), prefix.is_some(), "{case}");
            assert_eq!(check(&value, BODY).map(|v| v.secret_index), Ok(0), "{case}");
            assert_eq!(check(&value, b"{}"), mismatch("x-signature"), "{case}");
            assert_eq!(check(&other, BODY), mismatch("x-signature"), "{case}");
            let unpadded = check(value.trim_end_matches('='), BODY);
            assert!(unpadded.is_ok(), "{case} without base64 padding");
            let signature = signature_of(&value);
            for bad in [format!("sha1={signature}"), format!("{value}ff")] {
                assert_malformed(check(&bad, BODY), &format!("{case} {bad}"));
            }
        }
    }
    let scheme = SignatureScheme::GenericHmac(generic(SignatureEncoding::Hex, Some("v=")));
    let value = format!("V={}", hex::encode(mac(b"generic-secret", &[BODY])));
    let rejection = verify(&scheme, &[("x-signature", &value)], BODY).unwrap_err();
    let message = "malformed header `x-signature`: does not start with `v=`";
    assert_eq!(rejection.to_string(), message);
}

#[test]
fn construction_rejects_bad_settings_with_the_reason() {
    let tolerance = DEFAULT_TIMESTAMP_TOLERANCE;
    let standard = |texts: &[&str]| StandardWebhooksScheme::try_new(&secrets(texts), tolerance);
    let stripe = |texts: &[&str], tolerance| StripeScheme::try_new(&secrets(texts), tolerance);
    let hex = SignatureEncoding::Hex;
    let errors = [
        GitHubScheme::try_new(&[]).unwrap_err(),
        GitHubScheme::try_new(&secrets(&["ok", ""])).unwrap_err(),
        standard(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).unwrap_err(),
        standard(&[WHSEC, "whsec_not base64!"]).unwrap_err(),
        standard(&["whsec_"]).unwrap_err(),
        stripe(&["sk_test_123"], tolerance).unwrap_err(),
        stripe(&[WHSEC], Duration::from_millis(500)).unwrap_err(),
        GenericHmacScheme::try_new(&secrets(&["s"]), "a b", hex, None).unwrap_err(),
        StandardWebhooksScheme::sign("whsec_%", "msg_1", NOW, BODY).unwrap_err(),
    ];
    let expected = [
        "no secrets configured; give at least one (two while rotating)",
        "secret 2 of 2 is empty",
        "secret 1 of 1 does not start with `whsec_`; copy the secret as the provider shows it",
        "secret 2 of 2 is not valid base64 after `whsec_`",
        "secret 1 of 1 has nothing after `whsec_`",
        "secret 1 of 1 does not start with `whsec_`; use the endpoint's signing secret, \
         not an API key",
        "timestamp tolerance 500ms is under 1 s; the default is 300 s",
        "`a b` is not a valid header name",
        "is not valid base64 after `whsec_`",
    ];
    assert_eq!(errors, expected);
}

#[test]
fn secrets_and_expected_signatures_never_show() {
    let hex = SignatureEncoding::Hex;
    let generic = GenericHmacScheme::try_new(&secrets(&["generic-hunter2"]), "X-Sig", hex, None);
    let schemes = [
        github(&["github-hunter2"]),
        stripe(&["whsec_stripe-hunter2"]),
        standard(&[WHSEC]),
        SignatureScheme::GenericHmac(generic.unwrap()),
    ];
    let expected = [
        GitHubScheme::sign("github-hunter2", BODY),
        StripeScheme::sign("whsec_stripe-hunter2", NOW, BODY),
        StandardWebhooksScheme::sign(WHSEC, "msg_1", NOW, BODY).unwrap(),
        hex::encode(mac(b"generic-hunter2", &[BODY])),
    ];
    let requests = [
        headers(&[(GITHUB_SIGNATURE, &GitHubScheme::sign("wrong", BODY))]),
        headers(&[(STRIPE_SIGNATURE, &StripeScheme::sign("wrong", NOW, BODY))]),
        standard_request(
            "msg_1",
            NOW,
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        ),
        headers(&[("x-sig", &hex::encode(mac(b"wrong", &[BODY])))]),
    ];
    for ((scheme, expected), request) in schemes.iter().zip(&expected).zip(&requests) {
        let debug = format!("{scheme:?}");
        assert!(debug.contains("REDACTED"), "{debug}");
        let message = scheme
            .verify(request, BODY, at(NOW))
            .unwrap_err()
            .to_string();
        for shown in [&debug, &message] {
            assert!(
                !shown.contains("hunter2") && !shown.contains(&WHSEC[6..]),
                "{shown}"
            );
            assert!(!shown.contains(signature_of(expected)), "{shown}");
        }
    }
}
