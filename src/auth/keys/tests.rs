//! Key ring: files, modes, reload, rotation grace, JWKS.

use super::*;

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_else(|| panic!("bad time {unix}"))
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn open(dir: &Path, now: DateTime<Utc>) -> KeyRing {
    KeyRing::open(dir, Duration::hours(1), now).unwrap_or_else(|e| panic!("{e}"))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions()
        .mode()
        & 0o777
}

fn key_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
}

#[test]
fn first_use_creates_a_private_dir_and_a_private_pkcs8_key() {
    let tmp = temp_dir();
    let dir = tmp.path().join("data").join("keys");
    let ring = open(&dir, at(1_700_000_000));
    assert_eq!(mode(&dir), 0o700);
    let files = key_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files.first().unwrap_or_else(|| panic!("no key file"));
    assert_eq!(mode(file), 0o600);
    let der = fs::read(file).unwrap_or_else(|e| panic!("{e}"));
    let signing = SigningKey::from_pkcs8_der(&der).unwrap_or_else(|e| panic!("{e}"));
    let active = ring.active().unwrap_or_else(|| panic!("no active key"));
    let expected = hex::encode(Sha256::digest(signing.verifying_key().to_bytes()));
    assert_eq!(active.kid.as_str(), expected.get(..16).unwrap_or_default());
}

#[test]
fn reopening_loads_the_same_keys_from_disk() {
    let tmp = temp_dir();
    let ring = open(tmp.path(), at(1_700_000_000));
    let rotated = ring
        .rotate(at(1_700_000_100))
        .unwrap_or_else(|e| panic!("{e}"));
    let kids = ring.kids();
    drop(ring);
    let reopened = open(tmp.path(), at(1_700_000_200));
    assert_eq!(reopened.kids(), kids);
    assert_eq!(reopened.active().map(|k| k.kid), Some(rotated));
}

#[test]
fn rotated_keys_verify_until_their_tokens_expire_then_are_pruned() {
    let tmp = temp_dir();
    let t0 = at(1_700_000_000);
    let ring = open(tmp.path(), t0);
    let old = ring
        .active()
        .map(|k| k.kid)
        .unwrap_or_else(|| panic!("no key"));
    let retired_at = t0 + Duration::minutes(10);
    let new = ring.rotate(retired_at).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(old, new);
    assert_eq!(ring.active().map(|k| k.kid), Some(new.clone()));
    // Within the grace: both verify and both are published.
    let during = retired_at + Duration::minutes(59);
    assert!(ring.decoding_key(&old, during).is_some());
    assert!(ring.decoding_key(&new, during).is_some());
    assert_eq!(ring.jwks(during)["keys"].as_array().map(Vec::len), Some(2));
    // After retired_at + max_token_ttl: the old key is gone, even before pruning.
    let after = retired_at + Duration::hours(1);
    assert!(ring.decoding_key(&old, after).is_none());
    assert_eq!(ring.jwks(after)["keys"].as_array().map(Vec::len), Some(1));
    ring.prune(after).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ring.kids(), vec![new]);
    assert_eq!(key_files(tmp.path()).len(), 1);
}

#[test]
fn two_rotations_at_the_same_instant_keep_a_strict_order() {
    let tmp = temp_dir();
    let t0 = at(1_700_000_000);
    let ring = open(tmp.path(), t0);
    let second = ring.rotate(t0).unwrap_or_else(|e| panic!("{e}"));
    let third = ring.rotate(t0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ring.active().map(|k| k.kid), Some(third.clone()));
    let reopened = open(tmp.path(), t0);
    assert_eq!(reopened.kids().last(), Some(&third));
    assert!(reopened.kids().contains(&second));
}

#[test]
fn jwks_lists_okp_ed25519_keys() {
    let tmp = temp_dir();
    let now = at(1_700_000_000);
    let ring = open(tmp.path(), now);
    let jwks = ring.jwks(now);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    let kid = ring
        .active()
        .map(|k| k.kid)
        .unwrap_or_else(|| panic!("no key"));
    assert_eq!(key["kid"], kid.as_str());
    let x = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(x.len(), 32);
    assert!(
        key.get("d").is_none(),
        "private part must never be published"
    );
}

#[test]
fn an_open_key_directory_is_tightened() {
    let tmp = temp_dir();
    let dir = tmp.path().join("keys");
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("{e}"));
    drop(open(&dir, at(1_700_000_000)));
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn readable_key_files_are_refused() {
    let tmp = temp_dir();
    drop(open(tmp.path(), at(1_700_000_000)));
    for file in key_files(tmp.path()) {
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let err = KeyRing::open(tmp.path(), Duration::hours(1), at(1_700_000_000));
    assert!(
        matches!(err, Err(KeyError::InsecurePermissions { .. })),
        "{err:?}"
    );
}

#[test]
fn kids_are_sixteen_lowercase_hex_digits_only() {
    assert!(Kid::parse("0123456789abcdef").is_some());
    for bad in [
        "0123456789ABCDEF",
        "0123456789abcde",
        "../../etc/passwd",
        "' OR 1=1 --",
        "",
    ] {
        assert!(Kid::parse(bad).is_none(), "{bad}");
    }
}
