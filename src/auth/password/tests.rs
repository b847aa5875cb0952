//! Password hashing: parameters, dummy verify, length cap, reuse, the semaphore.

use super::*;

fn secret(s: &str) -> Secret {
    Secret::new(s)
}

#[tokio::test]
async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
    let hasher = PasswordHasher::new(2);
    let hash = hasher
        .hash(&secret("Correct-Horse-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        hash.as_str()
    );
    assert!(hasher.verify(&secret("Correct-Horse-1"), Some(&hash)).await);
    assert!(!hasher.verify(&secret("correct-Horse-1"), Some(&hash)).await);
    // Same password, fresh salt: a different string.
    let again = hasher
        .hash(&secret("Correct-Horse-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(hash, again);
    assert_eq!(format!("{hash:?}"), "PasswordHash([redacted])");
}

#[tokio::test]
async fn unknown_user_is_verified_against_a_dummy_and_refused() {
    let hasher = PasswordHasher::new(1);
    assert!(hasher.dummy.get().is_none());
    assert!(!hasher.verify(&secret("anything"), None).await);
    // The dummy was computed, and is reused rather than recomputed.
    let first = hasher.dummy.get().cloned();
    assert!(first.is_some());
    assert!(!hasher.verify(&secret("anything"), None).await);
    assert_eq!(hasher.dummy.get().cloned(), first);
}

#[tokio::test]
async fn passwords_over_256_bytes_are_refused() {
    let hasher = PasswordHasher::new(1);
    let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
    assert!(matches!(
        hasher.hash(&secret(&long)).await,
        Err(PasswordError::TooLong)
    ));
    let max = "a".repeat(MAX_PASSWORD_BYTES);
    let hash = hasher
        .hash(&secret(&max))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(hasher.verify(&secret(&max), Some(&hash)).await);
    assert!(!hasher.verify(&secret(&long), Some(&hash)).await);
}

#[tokio::test]
async fn reuse_is_detected_against_the_history() {
    let hasher = PasswordHasher::new(2);
    let mut history = Vec::new();
    for p in ["Old-Pass-1", "Old-Pass-2"] {
        history.push(
            hasher
                .hash(&secret(p))
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let reused = hasher.is_reused(&secret("Old-Pass-1"), &history).await;
    assert!(reused.unwrap_or_else(|e| panic!("{e}")));
    let fresh = hasher.is_reused(&secret("New-Pass-3"), &history).await;
    assert!(!fresh.unwrap_or_else(|e| panic!("{e}")));
    let empty = hasher.is_reused(&secret("Old-Pass-1"), &[]).await;
    assert!(!empty.unwrap_or_else(|e| panic!("{e}")));
}

#[test]
fn stored_hashes_must_be_argon2id_phc_strings() {
    assert!(PasswordHash::from_phc("plaintext").is_err());
    assert!(
        PasswordHash::from_phc("$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
            .is_err()
    );
    assert!(
        PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
            .is_ok()
    );
}

#[tokio::test]
async fn hashing_waits_for_a_permit() {
    let hasher = PasswordHasher::new(1);
    let held = hasher
        .permits
        .clone()
        .acquire_owned()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let password = secret("Pass-word-1");
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        hasher.hash(&password),
    )
    .await;
    assert!(waiting.is_err(), "hash ran without a permit");
    drop(held);
    assert!(hasher.hash(&password).await.is_ok());
}

#[tokio::test]
async fn a_zero_permit_count_still_makes_progress() {
    let hasher = PasswordHasher::new(0);
    assert!(hasher.hash(&secret("Pass-word-1")).await.is_ok());
}
