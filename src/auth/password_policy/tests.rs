//! Password policy: ranges, rules, management floor, expiry.

use super::*;

fn params() -> PasswordPolicyParams {
    PasswordPolicy::default().params()
}

fn policy(params: PasswordPolicyParams) -> PasswordPolicy {
    PasswordPolicy::new(params).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ranges_are_enforced_and_every_bad_field_is_named() {
    for ok in [8, 128] {
        assert!(
            PasswordPolicy::new(PasswordPolicyParams {
                min_length: ok,
                ..params()
            })
            .is_ok()
        );
    }
    let err = PasswordPolicy::new(PasswordPolicyParams {
        min_length: 7,
        max_age_days: Some(1096),
        reuse_prevention: Some(25),
        ..params()
    });
    let Err(PasswordPolicyError::OutOfRange(fields)) = err else {
        panic!("expected out of range, got {err:?}");
    };
    assert_eq!(
        fields,
        vec![
            FieldOutOfRange::MinLength(7),
            FieldOutOfRange::MaxAgeDays(1096),
            FieldOutOfRange::ReusePrevention(25),
        ]
    );
    let message = PasswordPolicyError::OutOfRange(fields).to_string();
    for name in ["`min_length`", "`max_age_days`", "`reuse_prevention`"] {
        assert!(message.contains(name), "{message}");
    }
    assert!(
        PasswordPolicy::new(PasswordPolicyParams {
            min_length: 129,
            ..params()
        })
        .is_err()
    );
    assert!(
        PasswordPolicy::new(PasswordPolicyParams {
            max_age_days: Some(0),
            ..params()
        })
        .is_err()
    );
    assert!(
        PasswordPolicy::new(PasswordPolicyParams {
            reuse_prevention: Some(0),
            ..params()
        })
        .is_err()
    );
    assert!(
        PasswordPolicy::new(PasswordPolicyParams {
            max_age_days: Some(1095),
            reuse_prevention: Some(24),
            ..params()
        })
        .is_ok()
    );
}

#[test]
fn default_requires_eight_characters_of_every_class() {
    let p = PasswordPolicy::default();
    assert!(p.check("Abcdef1!").is_ok());
    assert_eq!(
        p.check("abc").map_err(|v| v.unmet),
        Err(vec![
            PasswordRule::MinLength(8),
            PasswordRule::Uppercase,
            PasswordRule::Digit,
            PasswordRule::Symbol,
        ])
    );
    // A space is not a symbol; a non-ASCII character is no class at all.
    assert!(p.check("Abcdef1 ").is_err());
    assert!(p.check("Abcdef1é").is_err());
    assert!(p.check("Abcdef1~").is_ok());
}

#[test]
fn violation_message_names_each_unmet_rule() {
    let p = policy(PasswordPolicyParams {
        min_length: 12,
        ..params()
    });
    let err = p
        .check("short")
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    assert_eq!(
        err.to_string(),
        "the password needs at least 12 characters, an upper-case letter, a digit and a symbol"
    );
    let only_length = policy(PasswordPolicyParams {
        min_length: 12,
        require_uppercase: false,
        require_lowercase: false,
        require_digit: false,
        require_symbol: false,
        ..params()
    });
    let err = only_length
        .check("x")
        .err()
        .unwrap_or_else(|| panic!("should fail"));
    assert_eq!(err.to_string(), "the password needs at least 12 characters");
}

#[test]
fn overlong_passwords_violate_the_length_cap() {
    let p = PasswordPolicy::default();
    let long = format!("Aa1!{}", "x".repeat(MAX_PASSWORD_CHARS as usize - 4));
    assert_eq!(p.check(&long), Ok(()));
    let long = format!("{long}x");
    assert_eq!(
        p.check(&long).map_err(|v| v.unmet),
        Err(vec![PasswordRule::MaxLength(MAX_PASSWORD_CHARS)])
    );
    // The longest password of 4-byte characters still fits the hasher's byte cap.
    let wide = format!("Aa1!{}", "😀".repeat(MAX_PASSWORD_CHARS as usize - 4));
    assert_eq!(p.check(&wide), Ok(()));
    assert!(wide.len() <= crate::auth::password::MAX_PASSWORD_BYTES);
}

#[test]
fn management_accounts_never_go_below_the_default() {
    let weak = policy(PasswordPolicyParams {
        min_length: 8,
        require_uppercase: false,
        require_lowercase: false,
        require_digit: false,
        require_symbol: false,
        max_age_days: Some(90),
        reuse_prevention: Some(5),
    });
    assert!(weak.check("aaaaaaaa").is_ok());
    assert!(weak.effective(false).check("aaaaaaaa").is_ok());
    let floor = weak.effective(true);
    assert!(floor.check("aaaaaaaa").is_err());
    assert!(floor.check("Aaaaaaa1!").is_ok());
    assert_eq!(floor.max_age_days(), Some(90));
    assert_eq!(floor.reuse_prevention(), Some(5));
    // A stricter own policy is kept.
    let strict = policy(PasswordPolicyParams {
        min_length: 20,
        ..params()
    });
    assert_eq!(strict.effective(true), strict);
}

#[test]
fn passwords_expire_after_max_age_days() {
    let changed = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let p = policy(PasswordPolicyParams {
        max_age_days: Some(30),
        ..params()
    });
    assert!(!p.is_expired(changed, changed + Duration::days(30) - Duration::seconds(1)));
    assert!(p.is_expired(changed, changed + Duration::days(30)));
    assert!(!PasswordPolicy::default().is_expired(changed, changed + Duration::days(5000)));
}

#[test]
fn requests_name_every_field_even_far_outside_the_stored_types() {
    let request = PasswordPolicyRequest {
        min_length: -1,
        require_uppercase: true,
        require_lowercase: true,
        require_digit: true,
        require_symbol: true,
        max_age_days: Some(70_000),
        reuse_prevention: Some(300),
    };
    let Err(PasswordPolicyError::OutOfRange(fields)) = PasswordPolicy::from_request(request) else {
        panic!("expected out of range");
    };
    assert_eq!(
        fields,
        vec![
            FieldOutOfRange::MinLength(-1),
            FieldOutOfRange::MaxAgeDays(70_000),
            FieldOutOfRange::ReusePrevention(300),
        ]
    );
    let ok = PasswordPolicy::from_request(PasswordPolicyRequest {
        min_length: 128,
        max_age_days: Some(1095),
        reuse_prevention: Some(24),
        ..request
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.params().min_length, 128);
    assert_eq!(ok.max_age_days(), Some(1095));
    assert_eq!(ok.reuse_prevention(), Some(24));
}
