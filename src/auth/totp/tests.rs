//! TOTP: RFC 6238 vectors, drift window, replay, input format, oathtool interop.

use super::*;

/// The RFC 6238 SHA-1 secret `12345678901234567890` in Base32.
const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_else(|| panic!("bad time {unix}"))
}

fn rfc_secret() -> TotpSecret {
    TotpSecret::from_base32(RFC_SECRET).unwrap_or_else(|e| panic!("{e}"))
}

fn code_at(secret: &TotpSecret, unix: i64) -> String {
    let totp = secret.totp(None).unwrap_or_else(|e| panic!("{e}"));
    totp.generate(u64::try_from(unix).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn rfc_6238_vectors_verify_at_their_step() {
    let secret = rfc_secret();
    for (unix, code) in [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
        (20_000_000_000, "353130"),
    ] {
        let step = verify(&secret, code, at(unix), None).unwrap_or_else(|e| panic!("{unix}: {e}"));
        assert_eq!(step, u64::try_from(unix).unwrap_or_default() / 30, "{unix}");
    }
}

#[test]
fn one_step_of_drift_is_accepted_two_are_not() {
    let secret = rfc_secret();
    let now = 1_234_567_890;
    let step = u64::try_from(now).unwrap_or_default() / 30;
    for (offset, ok) in [
        (-60, false),
        (-30, true),
        (0, true),
        (30, true),
        (60, false),
    ] {
        let code = code_at(&secret, now + offset);
        let result = verify(&secret, &code, at(now), None);
        if ok {
            let expected = step.checked_add_signed(offset / 30).unwrap_or_default();
            assert_eq!(result, Ok(expected), "offset {offset}");
        } else {
            assert_eq!(result, Err(TotpError::Mismatch), "offset {offset}");
        }
    }
}

#[test]
fn a_code_is_never_accepted_twice_nor_an_older_one() {
    let secret = rfc_secret();
    let now = 1_234_567_890;
    let code = code_at(&secret, now);
    let step = verify(&secret, &code, at(now), None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        verify(&secret, &code, at(now), Some(step)),
        Err(TotpError::Replayed)
    );
    // The previous step's code is still in the window but older than the accepted one.
    let older = code_at(&secret, now - 30);
    assert_eq!(
        verify(&secret, &older, at(now), Some(step)),
        Err(TotpError::Replayed)
    );
    // The next step's code is newer: accepted.
    let newer = code_at(&secret, now + 30);
    assert_eq!(
        verify(&secret, &newer, at(now + 30), Some(step)),
        Ok(step + 1)
    );
}

#[test]
fn anything_but_six_ascii_digits_is_refused() {
    let secret = rfc_secret();
    for bad in [
        "",
        "12345",
        "1234567",
        "00592a",
        " 05924",
        "٠٠٥٩٢٤",
        "005924\n",
        "+05924",
    ] {
        assert_eq!(
            verify(&secret, bad, at(1_234_567_890), None),
            Err(TotpError::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn generated_secrets_are_160_bit_base32_and_make_an_otpauth_uri() {
    let secret = TotpSecret::generate();
    assert_eq!(secret.0.len(), 20);
    let b32 = secret.to_base32();
    assert_eq!(b32.expose().len(), 32);
    assert!(
        b32.expose()
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    assert_eq!(TotpSecret::from_base32(b32.expose()), Ok(secret.clone()));
    assert_ne!(TotpSecret::generate(), secret);
    assert_eq!(format!("{secret:?}"), "TotpSecret([redacted])");

    let account = AccountId::parse("123456789012").unwrap_or_else(|e| panic!("{e}"));
    let user = UserName::parse("alice").unwrap_or_else(|e| panic!("{e}"));
    let uri = secret
        .otpauth_uri(&account, &user)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        uri.expose(),
        format!(
            "otpauth://totp/tollgate:123456789012%2Falice?secret={}&issuer=tollgate",
            b32.expose()
        )
    );
    assert_eq!(
        TotpSecret::from_base32("AAAA"),
        Err(TotpError::InvalidSecret)
    );
    assert_eq!(
        TotpSecret::from_base32("not base32!"),
        Err(TotpError::InvalidSecret)
    );
}

/// A code from a standard authenticator (oathtool, with its clock pinned) verifies.
#[test]
fn codes_from_oathtool_verify() {
    let secret = TotpSecret::generate();
    let b32 = secret.to_base32();
    for unix in [1_700_000_000_i64, 1_700_000_029, 2_000_000_000] {
        let when = at(unix).format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let output = std::process::Command::new("oathtool")
            .args(["--totp", "-b", "--now", &when, b32.expose()])
            .output()
            .unwrap_or_else(|e| {
                panic!("could not run `oathtool` ({e}); install it: apt-get install oathtool")
            });
        assert!(output.status.success(), "oathtool failed: {output:?}");
        let code = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let step = verify(&secret, &code, at(unix), None)
            .unwrap_or_else(|e| panic!("oathtool code {code} at {when}: {e}"));
        assert_eq!(step, u64::try_from(unix).unwrap_or_default() / 30);
    }
}
