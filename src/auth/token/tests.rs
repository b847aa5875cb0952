//! Token issuing and verification, including the RFC 8725 attack list of REFERENCE.md.

use jsonwebtoken::EncodingKey;
use serde_json::json;

use super::*;

const ISSUER: &str = "https://tollgate.test";
const AUDIENCE: &str = "tollgate";

struct Fixture {
    _dir: tempfile::TempDir,
    issuer: TokenIssuer,
    t0: DateTime<Utc>,
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_else(|| panic!("bad time {unix}"))
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let t0 = at(1_700_000_000);
    let ring = KeyRing::open(dir.path(), Duration::hours(1), t0).unwrap_or_else(|e| panic!("{e}"));
    let issuer = TokenIssuer::new(Arc::new(ring), ISSUER, AUDIENCE, Duration::hours(1));
    Fixture {
        _dir: dir,
        issuer,
        t0,
    }
}

fn account() -> AccountId {
    AccountId::parse("123456789012").unwrap_or_else(|e| panic!("{e}"))
}

fn user() -> UserName {
    UserName::parse("alice").unwrap_or_else(|e| panic!("{e}"))
}

fn issue(f: &Fixture, now: DateTime<Utc>) -> String {
    f.issuer
        .issue(&account(), &user(), true, now)
        .unwrap_or_else(|e| panic!("{e}"))
        .token
        .expose()
        .to_owned()
}

fn active_kid(f: &Fixture) -> String {
    f.issuer
        .keys()
        .active()
        .map(|k| k.kid.to_string())
        .unwrap_or_else(|| panic!("no active key"))
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn good_claims(f: &Fixture) -> serde_json::Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "acct": "123456789012", "mfa": true,
        "iat": f.t0.timestamp(), "exp": (f.t0 + Duration::hours(1)).timestamp(),
        "jti": "0123456789abcdef", "scope": "service",
    })
}

/// Signs arbitrary claims with the ring's active key, as an attacker holding it could not
/// but a bug in our own issuing might: the verifier must still check every claim.
fn sign_with_ring(f: &Fixture, claims: &serde_json::Value) -> String {
    let active = f.issuer.keys().active().unwrap_or_else(|| panic!("no key"));
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(active.kid.to_string());
    jsonwebtoken::encode(&header, claims, &active.encoding).unwrap_or_else(|e| panic!("{e}"))
}

fn verify(f: &Fixture, token: &str) -> Result<Claims, TokenError> {
    f.issuer.verify(token, f.t0 + Duration::minutes(1))
}

#[test]
fn issued_tokens_verify_with_every_claim() {
    let f = fixture();
    let issued = f
        .issuer
        .issue(&account(), &user(), true, f.t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(issued.expires_at, f.t0 + Duration::hours(1));
    let token = issued.token.expose();
    let header = jsonwebtoken::decode_header(token).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid, Some(active_kid(&f)));
    let claims = verify(&f, token).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.issuer, ISSUER);
    assert_eq!(claims.audience, AUDIENCE);
    assert_eq!(claims.user, user());
    assert_eq!(claims.account, account());
    assert!(claims.mfa);
    assert_eq!(claims.issued_at, f.t0);
    assert_eq!(claims.expires_at, f.t0 + Duration::hours(1));
    assert_eq!(claims.jti, issued.jti);
    assert_eq!(claims.scope, Scope::Service);
    // The raw payload carries the SPEC names.
    let payload = token.split('.').nth(1).unwrap_or_default();
    let raw: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for name in [
        "iss", "aud", "sub", "acct", "mfa", "iat", "exp", "jti", "scope",
    ] {
        assert!(raw.get(name).is_some(), "missing {name} in {raw}");
    }
    assert_eq!(raw["sub"], "alice");
    assert_eq!(raw["acct"], "123456789012");
}

#[test]
fn mfa_enrollment_tokens_last_ten_minutes_and_say_so() {
    let f = fixture();
    let issued = f
        .issuer
        .issue_mfa_enrollment(&account(), &user(), f.t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(issued.expires_at, f.t0 + Duration::minutes(10));
    let claims = verify(&f, issued.token.expose()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.scope, Scope::MfaEnroll);
    assert!(!claims.mfa);
    let late = f
        .issuer
        .verify(issued.token.expose(), f.t0 + Duration::minutes(10));
    assert!(matches!(late, Err(TokenError::Expired { .. })), "{late:?}");
}

#[test]
fn identity_tokens_name_the_service_and_request_and_are_refused_by_the_gateway() {
    let f = fixture();
    let caller = verify(&f, &issue(&f, f.t0)).unwrap_or_else(|e| panic!("{e}"));
    let rid = RequestId::parse("req-1").unwrap_or_else(|e| panic!("{e}"));
    let identity = f
        .issuer
        .issue_identity(&caller, &rid, "storage", Duration::seconds(60), f.t0)
        .unwrap_or_else(|e| panic!("{e}"));
    let token = identity.token.expose();
    let claims = f
        .issuer
        .verify_for(token, "storage", f.t0)
        .map(|v| v.claims)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.scope, Scope::Identity);
    assert_eq!(claims.request_id, Some(rid));
    assert_eq!(claims.account, account());
    assert!(claims.mfa);
    assert_eq!(claims.expires_at, f.t0 + Duration::seconds(60));
    assert!(matches!(
        f.issuer.verify(token, f.t0),
        Err(TokenError::WrongAudience { .. })
    ));
    // Even for a service that shares the gateway's audience name, the scope refuses it.
    let same_name = f
        .issuer
        .issue_identity(
            &caller,
            &RequestId::generate(),
            AUDIENCE,
            Duration::seconds(60),
            f.t0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        f.issuer.verify(same_name.token.expose(), f.t0),
        Err(TokenError::WrongScope)
    ));
}

#[test]
fn alg_none_is_refused() {
    let f = fixture();
    for header in [
        json!({"alg": "none", "kid": active_kid(&f)}),
        json!({"alg": "None", "kid": active_kid(&f)}),
        json!({"alg": "", "kid": active_kid(&f)}),
        json!({"alg": null, "kid": active_kid(&f)}),
    ] {
        let token = format!("{}.{}.", b64(&header), b64(&good_claims(&f)));
        let result = verify(&f, &token);
        assert!(
            matches!(result, Err(TokenError::AlgorithmNotAllowed { .. })),
            "{header}: {result:?}"
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let f = fixture();
    let jwks = f.issuer.keys().jwks(f.t0);
    let x = jwks["keys"][0]["x"].as_str().unwrap_or_default().to_owned();
    let public = URL_SAFE_NO_PAD.decode(&x).unwrap_or_else(|e| panic!("{e}"));
    for secret in [public, x.into_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(active_kid(&f));
        let token = jsonwebtoken::encode(
            &header,
            &good_claims(&f),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let result = verify(&f, &token);
        assert!(
            matches!(&result, Err(TokenError::AlgorithmNotAllowed { alg }) if alg == "HS256"),
            "{result:?}"
        );
    }
}

#[test]
fn rsa_and_ecdsa_algorithms_are_refused() {
    let f = fixture();
    for alg in [
        "RS256", "PS256", "ES256", "ES384", "HS512", "EDDSA", "Ed25519",
    ] {
        let header = json!({"alg": alg, "kid": active_kid(&f)});
        let token = format!("{}.{}.c2ln", b64(&header), b64(&good_claims(&f)));
        assert!(
            matches!(
                verify(&f, &token),
                Err(TokenError::AlgorithmNotAllowed { .. })
            ),
            "{alg}"
        );
    }
}

#[test]
fn kid_injection_is_refused_without_echoing_the_kid() {
    let f = fixture();
    let huge = "a".repeat(5000);
    for kid in [
        "../../etc/passwd",
        "/dev/null",
        "' OR '1'='1",
        "1; DROP TABLE keys; --",
        "https://evil.example/jwks.json",
        "0123456789ABCDEF",
        "0123456789abcdef0",
        huge.as_str(),
    ] {
        let header = json!({"alg": "EdDSA", "kid": kid});
        let token = format!("{}.{}.c2ln", b64(&header), b64(&good_claims(&f)));
        let result = verify(&f, &token);
        let Err(error) = result else {
            panic!("{kid} accepted");
        };
        assert!(
            matches!(error, TokenError::MalformedKeyId | TokenError::TooLarge),
            "{kid}: {error}"
        );
        assert!(!error.to_string().contains(kid), "{error}");
    }
    // A non-string kid and a missing kid.
    let token = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "EdDSA", "kid": 7})),
        b64(&good_claims(&f))
    );
    assert!(matches!(
        verify(&f, &token),
        Err(TokenError::MalformedKeyId)
    ));
    let token = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "EdDSA"})),
        b64(&good_claims(&f))
    );
    assert!(matches!(verify(&f, &token), Err(TokenError::MissingKeyId)));
}

#[test]
fn unknown_kid_and_foreign_keys_are_refused() {
    let f = fixture();
    let header = json!({"alg": "EdDSA", "kid": "0123456789abcdef"});
    let token = format!("{}.{}.c2ln", b64(&header), b64(&good_claims(&f)));
    assert!(matches!(
        verify(&f, &token),
        Err(TokenError::UnknownKey { .. })
    ));
    // A token from another gateway's ring (same issuer and audience names).
    let other = fixture();
    let foreign = issue(&other, f.t0);
    assert!(matches!(
        verify(&f, &foreign),
        Err(TokenError::UnknownKey { .. })
    ));
}

#[test]
fn expiry_is_checked_against_the_injected_clock() {
    let f = fixture();
    let token = issue(&f, f.t0);
    // The real clock is years past t0; only the injected time counts.
    assert!(
        f.issuer
            .verify(&token, f.t0 + Duration::minutes(59))
            .is_ok()
    );
    let result = f.issuer.verify(&token, f.t0 + Duration::hours(1));
    assert!(
        matches!(result, Err(TokenError::Expired { expired_at }) if expired_at == f.t0 + Duration::hours(1))
    );
}

#[test]
fn not_yet_valid_tokens_are_refused() {
    let f = fixture();
    let mut claims = good_claims(&f);
    claims["nbf"] = json!((f.t0 + Duration::minutes(30)).timestamp());
    let token = sign_with_ring(&f, &claims);
    assert!(matches!(
        verify(&f, &token),
        Err(TokenError::NotYetValid { .. })
    ));
    assert!(
        f.issuer
            .verify(&token, f.t0 + Duration::minutes(30))
            .is_ok()
    );
    // Issued in the future, beyond the allowed skew.
    let future = issue(&f, f.t0 + Duration::minutes(5));
    assert!(matches!(
        f.issuer.verify(&future, f.t0),
        Err(TokenError::NotYetValid { .. })
    ));
    let slightly = issue(&f, f.t0 + Duration::seconds(30));
    assert!(f.issuer.verify(&slightly, f.t0).is_ok());
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let f = fixture();
    let other_iss = TokenIssuer::new(
        f.issuer.keys().clone(),
        "https://evil.test",
        AUDIENCE,
        Duration::hours(1),
    );
    let token = other_iss
        .issue(&account(), &user(), false, f.t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        verify(&f, token.token.expose()),
        Err(TokenError::WrongIssuer)
    ));

    let other_aud = TokenIssuer::new(
        f.issuer.keys().clone(),
        ISSUER,
        "billing",
        Duration::hours(1),
    );
    let token = other_aud
        .issue(&account(), &user(), false, f.t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        verify(&f, token.token.expose()),
        Err(TokenError::WrongAudience { .. })
    ));

    // An audience array containing ours is not an exact match.
    let mut claims = good_claims(&f);
    claims["aud"] = json!([AUDIENCE, "other"]);
    assert!(verify(&f, &sign_with_ring(&f, &claims)).is_err());
    let mut claims = good_claims(&f);
    claims["iss"] = json!([ISSUER]);
    assert!(verify(&f, &sign_with_ring(&f, &claims)).is_err());
}

#[test]
fn tampered_payloads_fail_the_signature() {
    let f = fixture();
    let token = issue(&f, f.t0);
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut claims = good_claims(&f);
    claims["sub"] = json!("admin");
    let forged = b64(&claims);
    if let Some(payload) = parts.get_mut(1) {
        *payload = &forged;
    }
    let tampered = parts.join(".");
    assert!(matches!(
        verify(&f, &tampered),
        Err(TokenError::BadSignature)
    ));
    // Flipping mfa only.
    let raw = token.split('.').nth(1).unwrap_or_default();
    let decoded =
        String::from_utf8(URL_SAFE_NO_PAD.decode(raw).unwrap_or_default()).unwrap_or_default();
    let flipped = URL_SAFE_NO_PAD.encode(decoded.replace("\"mfa\":true", "\"mfa\":false"));
    let tampered = token.replacen(raw, &flipped, 1);
    assert_ne!(tampered, token);
    assert!(matches!(
        verify(&f, &tampered),
        Err(TokenError::BadSignature)
    ));
}

#[test]
fn truncated_and_malformed_tokens_are_refused() {
    let f = fixture();
    let token = issue(&f, f.t0);
    let cut = token.get(..token.len() - 10).unwrap_or_default();
    assert!(matches!(
        verify(&f, cut),
        Err(TokenError::BadSignature | TokenError::Malformed)
    ));
    let two_parts = token
        .rsplit_once('.')
        .map(|(head, _)| head)
        .unwrap_or_default();
    assert!(matches!(verify(&f, two_parts), Err(TokenError::Malformed)));
    let no_signature = format!("{two_parts}.");
    assert!(matches!(
        verify(&f, &no_signature),
        Err(TokenError::BadSignature | TokenError::Malformed)
    ));
    let four_parts = format!("{token}.x");
    assert!(matches!(
        verify(&f, &four_parts),
        Err(TokenError::Malformed)
    ));
    for junk in ["", ".", "..", "a.b.c", "not a token", "e30.e30.e30"] {
        assert!(verify(&f, junk).is_err(), "{junk}");
    }
    // A critical header extension we do not understand.
    let header = json!({"alg": "EdDSA", "kid": active_kid(&f), "crit": ["exp"]});
    let token = format!("{}.{}.c2ln", b64(&header), b64(&good_claims(&f)));
    assert!(matches!(verify(&f, &token), Err(TokenError::Malformed)));
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let f = fixture();
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(verify(&f, &huge), Err(TokenError::TooLarge)));
    let padded = format!("{}{}", issue(&f, f.t0), "A".repeat(MAX_TOKEN_BYTES));
    assert!(matches!(verify(&f, &padded), Err(TokenError::TooLarge)));
}

#[test]
fn claims_with_bad_identities_are_refused() {
    let f = fixture();
    for (name, value) in [
        ("sub", json!("bad/name")),
        ("acct", json!("123")),
        ("scope", json!("admin")),
        ("jti", json!("")),
        ("mfa", json!("yes")),
    ] {
        let mut claims = good_claims(&f);
        claims[name] = value;
        assert!(
            matches!(
                verify(&f, &sign_with_ring(&f, &claims)),
                Err(TokenError::Malformed)
            ),
            "{name}"
        );
    }
}

#[test]
fn rotation_keeps_old_tokens_valid_until_the_key_is_retired_out() {
    let f = fixture();
    let before = issue(&f, f.t0);
    let rotated_at = f.t0 + Duration::minutes(10);
    let new_kid = f
        .issuer
        .keys()
        .rotate(rotated_at)
        .unwrap_or_else(|e| panic!("{e}"));
    let after = issue(&f, rotated_at);
    assert_eq!(
        jwt_kid(&after),
        Some(new_kid.to_string()),
        "new tokens are signed with the new key"
    );
    let during = rotated_at + Duration::minutes(30);
    assert!(f.issuer.verify(&before, during).is_ok());
    assert!(f.issuer.verify(&after, during).is_ok());

    // A token from the old key that claims a long life still dies with the key.
    let mut claims = good_claims(&f);
    claims["exp"] = json!((f.t0 + Duration::days(30)).timestamp());
    let old_kid = jwt_kid(&before).unwrap_or_default();
    let long_lived = sign_with_kid_of(&f, &old_kid, &claims);
    assert!(f.issuer.verify(&long_lived, during).is_ok());
    let retired_out = rotated_at + Duration::hours(1);
    assert!(matches!(
        f.issuer.verify(&long_lived, retired_out),
        Err(TokenError::UnknownKey { .. })
    ));
}

#[test]
fn tokens_issued_before_a_password_change_are_marked() {
    let f = fixture();
    let login = f.t0 + Duration::milliseconds(200);
    let changed = f.t0 + Duration::milliseconds(500);
    let relogin = f.t0 + Duration::milliseconds(800);
    let old = verify(&f, &issue(&f, login)).unwrap_or_else(|e| panic!("{e}"));
    let new = verify(&f, &issue(&f, relogin)).unwrap_or_else(|e| panic!("{e}"));
    assert!(old.issued_before(changed), "same second, but earlier");
    assert!(!new.issued_before(changed), "same second, but later");
    let same = verify(&f, &issue(&f, changed)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        same.issued_before(changed),
        "the change's own millisecond is refused"
    );
}

fn jwt_kid(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid)
}

/// Signs with whichever ring key has `kid` (for tests of retired keys), by reopening the ring
/// directory: the files are the only way to reach a retired key's private half.
fn sign_with_kid_of(f: &Fixture, kid: &str, claims: &serde_json::Value) -> String {
    let dir = f.issuer.keys().dir();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(&format!("-{kid}.pk8")) {
            let der = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.to_owned());
            return jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    panic!("no key file for {kid}");
}

// --- the verified-token cache ---------------------------------------------------------------

#[test]
fn a_cached_token_still_dies_at_its_exp() {
    let f = fixture();
    let token = issue(&f, f.t0);
    assert!(f.issuer.verify(&token, f.t0).is_ok());
    assert_eq!(f.issuer.cached_tokens(), 1);
    // A hit just before `exp` is fine; at `exp` the cached entry is no help.
    assert!(
        f.issuer
            .verify(&token, f.t0 + Duration::minutes(59))
            .is_ok()
    );
    assert!(matches!(
        f.issuer.verify(&token, f.t0 + Duration::hours(1)),
        Err(TokenError::Expired { .. })
    ));
    assert_eq!(f.issuer.cached_tokens(), 0, "the expired entry is dropped");
}

// A cached token whose key is retired out: `rotation_keeps_old_tokens_valid_until_the_key_is_retired_out`
// verifies (and so caches) the long-lived token before the grace ends and expects UnknownKey after.

#[test]
fn only_tokens_that_pass_every_check_are_cached() {
    let f = fixture();
    let mut claims = good_claims(&f);
    claims["aud"] = json!("someone-else");
    let wrong_audience = sign_with_ring(&f, &claims);
    assert!(f.issuer.verify(&wrong_audience, f.t0).is_err());
    assert!(f.issuer.verify(&wrong_audience, f.t0).is_err());
    let token = issue(&f, f.t0);
    let mut tampered = token.clone();
    tampered.push('A');
    assert!(f.issuer.verify(&tampered, f.t0).is_err());
    assert_eq!(f.issuer.cached_tokens(), 0);
    assert!(f.issuer.verify(&token, f.t0).is_ok());
    assert_eq!(f.issuer.cached_tokens(), 1);
    // A token that differs in one byte is another key: no hit, a full check, refused.
    assert!(f.issuer.verify(&tampered, f.t0).is_err());
    f.issuer.forget(&token);
    assert_eq!(f.issuer.cached_tokens(), 0);
}

#[test]
fn cached_and_uncached_verification_agree() {
    let f = fixture();
    let token = issue(&f, f.t0);
    let full = f.issuer.verify_uncached(&token, f.t0);
    let first = f.issuer.verify(&token, f.t0);
    let hit = f.issuer.verify(&token, f.t0);
    assert_eq!(full.ok(), first.ok());
    assert_eq!(
        f.issuer.verify_uncached(&token, f.t0).ok(),
        hit.ok(),
        "a hit returns the very claims a full verification gives"
    );
}

/// Property tests: whatever bytes arrive as a token, `verify` answers (never panics), and no
/// change to a genuine token is accepted. `PROPTEST_CASES` raises the case count for longer
/// campaigns (docs/hardening.md).
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Pieces tokens are made of, so random strings look like tokens often enough to go deep.
    fn token_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just(".".to_owned()),
            Just("eyJ".to_owned()),
            Just("eyJhbGciOiJFZERTQSJ9".to_owned()),
            Just("eyJhbGciOiJub25lIn0".to_owned()),
            "[A-Za-z0-9_-]{0,40}",
            "[ -~]{0,8}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_input_never_panics_and_never_verifies(input in token_like()) {
            let f = fixture();
            prop_assert!(verify(&f, &input).is_err());
        }

        #[test]
        fn any_single_byte_change_to_a_real_token_is_refused(
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let f = fixture();
            let token = issue(&f, f.t0);
            let mut bytes = token.clone().into_bytes();
            let i = at.index(bytes.len());
            let Some(slot) = bytes.get_mut(i) else { return Ok(()) };
            prop_assume!(*slot != byte);
            *slot = byte;
            let changed = String::from_utf8_lossy(&bytes).into_owned();
            prop_assert!(
                verify(&f, &changed).is_err(),
                "byte {} of the token changed to {:#04x} and it still verified", i, byte
            );
        }

        #[test]
        fn signed_claims_of_any_shape_never_panic(
            sub in "[ -~]{0,80}",
            acct in "[0-9a-z]{0,14}",
            iat in any::<i64>(),
            exp in any::<i64>(),
            nbf in proptest::option::of(any::<i64>()),
            iat_ms in proptest::option::of(any::<i64>()),
            scope in "(service|identity|mfa-enroll|[a-z]{0,8})",
        ) {
            let f = fixture();
            let mut claims = good_claims(&f);
            claims["sub"] = json!(sub);
            claims["acct"] = json!(acct);
            claims["iat"] = json!(iat);
            claims["exp"] = json!(exp);
            claims["scope"] = json!(scope);
            if let Some(nbf) = nbf {
                claims["nbf"] = json!(nbf);
            }
            if let Some(ms) = iat_ms {
                claims["iat_ms"] = json!(ms);
            }
            let token = sign_with_ring(&f, &claims);
            if let Ok(verified) = verify(&f, &token) {
                // Whatever passes is live now and names a well-formed principal.
                let now = f.t0 + Duration::minutes(1);
                prop_assert!(verified.expires_at > now);
                prop_assert_eq!(verified.scope, Scope::Service);
            }
        }
    }
}
