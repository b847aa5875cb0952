//! Password hashing: parameters, dummy verify, length cap, reuse, the queue.

use super::*;

fn hasher(threads: usize) -> PasswordHasher {
    PasswordHasher::new(threads, QueueLimits::default(), Default::default())
}

fn login() -> Requester {
    Requester::login(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn account() -> Requester {
    Requester::account(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

async fn verify(hasher: &PasswordHasher, password: &str, stored: Option<&PasswordHash>) -> bool {
    hasher
        .verify(&secret(password), stored, login())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn secret(s: &str) -> Secret {
    Secret::new(s)
}

#[tokio::test]
async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
    let hasher = hasher(2);
    let hash = hasher
        .hash(&secret("Correct-Horse-1"), account())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        hash.as_str()
    );
    assert!(verify(&hasher, "Correct-Horse-1", Some(&hash)).await);
    assert!(!verify(&hasher, "correct-Horse-1", Some(&hash)).await);
    // Same password, fresh salt: a different string.
    let again = hasher
        .hash(&secret("Correct-Horse-1"), account())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(hash, again);
    assert_eq!(format!("{hash:?}"), "PasswordHash([redacted])");
}

#[tokio::test]
async fn unknown_user_is_verified_against_a_dummy_and_refused() {
    let hasher = hasher(1);
    assert!(!verify(&hasher, "anything", None).await);
    // The dummy was computed, and is reused rather than recomputed.
    let first = hasher.shared.dummy.get().cloned();
    assert!(first.is_some());
    assert!(!verify(&hasher, "anything", None).await);
    assert_eq!(hasher.shared.dummy.get().cloned(), first);
}

#[tokio::test]
async fn passwords_over_256_bytes_are_refused() {
    let hasher = hasher(1);
    let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
    assert!(matches!(
        hasher.hash(&secret(&long), account()).await,
        Err(PasswordError::TooLong)
    ));
    let max = "a".repeat(MAX_PASSWORD_BYTES);
    let hash = hasher
        .hash(&secret(&max), account())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(verify(&hasher, &max, Some(&hash)).await);
    assert!(!verify(&hasher, &long, Some(&hash)).await);
}

#[tokio::test]
async fn reuse_is_detected_against_the_history() {
    let hasher = hasher(2);
    let mut history = Vec::new();
    for p in ["Old-Pass-1", "Old-Pass-2"] {
        history.push(
            hasher
                .hash(&secret(p), account())
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let reused = hasher
        .is_reused(&secret("Old-Pass-1"), &history, account())
        .await;
    assert!(reused.unwrap_or_else(|e| panic!("{e}")));
    let fresh = hasher
        .is_reused(&secret("New-Pass-3"), &history, account())
        .await;
    assert!(!fresh.unwrap_or_else(|e| panic!("{e}")));
    let empty = hasher
        .is_reused(&secret("Old-Pass-1"), &[], account())
        .await;
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

fn job() -> Job {
    Box::new(|_: &Shared| {})
}

fn address(last: u8) -> ClientAddress {
    ClientAddress::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
}

#[test]
fn u4_the_queue_serves_addresses_in_turn_and_bounds_each() {
    let limits = QueueLimits {
        capacity: 6,
        per_address: 3,
    };
    let mut queue = FairQueue::default();
    for _ in 0..3 {
        assert!(queue.push(address(1), job(), limits).is_ok());
    }
    assert!(
        queue.push(address(1), job(), limits).is_err(),
        "one address holds at most its share"
    );
    assert!(queue.push(address(2), job(), limits).is_ok());
    // Turns: 1, 2, then 1's remaining work.
    assert_eq!(queue.turns.front(), Some(&address(1)));
    assert!(queue.pop().is_some());
    assert_eq!(queue.turns.front(), Some(&address(2)));
    assert!(queue.pop().is_some());
    assert_eq!(queue.turns.front(), Some(&address(1)));
    assert_eq!(queue.len, 2);
    for last in 3..7 {
        let pushed = queue.push(address(last), job(), limits);
        assert_eq!(pushed.is_ok(), queue.len < 6 || last < 7, "address {last}");
    }
    assert_eq!(queue.len, 6);
    assert!(
        queue.push(address(9), job(), limits).is_err(),
        "the lane is full"
    );
}

#[tokio::test]
async fn u4_a_full_lane_refuses_at_once_with_a_retry_time() {
    let limits = QueueLimits {
        capacity: 1,
        per_address: 1,
    };
    let hasher = PasswordHasher::new(1, limits, Default::default());
    // The dummy hash made at start runs on the login thread first: wait until it is done, so
    // what follows does not depend on how fast this machine hashes.
    // (With a lane of one, the warm-up itself is refused while the dummy job still waits.)
    let mut warmed = false;
    for _ in 0..500 {
        match hasher.verify(&secret("warm-up"), None, login()).await {
            Ok(false) => {
                warmed = true;
                break;
            }
            Err(PasswordError::Busy { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            other => panic!("warm-up: {other:?}"),
        }
    }
    assert!(warmed, "the dummy hash never finished");
    // Occupy the login thread (known to be running the blocker), then fill the lane.
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let blocker = tokio::spawn({
        let hasher = hasher.clone();
        async move {
            hasher
                .run(login(), move |_| {
                    let _ = started.send(());
                    let _ = hold.recv();
                })
                .await
        }
    });
    running.await.expect("the blocker runs on the login thread");
    let queued = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.verify(&secret("x"), None, login()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    match hasher.verify(&secret("y"), None, login()).await {
        Err(PasswordError::Busy { retry_after_secs }) => assert!(retry_after_secs >= 1),
        other => panic!("expected Busy, got {other:?}"),
    }
    // Account work has its own thread meanwhile.
    assert!(hasher.hash(&secret("Pass-word-1"), account()).await.is_ok());
    let _ = release.send(());
    let _ = blocker.await;
    let queued = queued.await;
    assert!(matches!(queued, Ok(Ok(false))), "{queued:?}");
}

#[tokio::test]
async fn a_zero_thread_count_still_makes_progress() {
    let hasher = hasher(0);
    assert!(hasher.hash(&secret("Pass-word-1"), login()).await.is_ok());
}
