//! TOTP codes from the real `oathtool` (RFC 6238 reference behaviour), so tests prove that a
//! standard authenticator's codes work, not just our own implementation's.

use std::process::Command;

/// The 6-digit TOTP code for a Base32 `secret` at `unix` seconds, as `oathtool --totp` makes it.
/// Fails the test with an install hint when oathtool is missing.
pub fn oathtool_code(secret: &str, unix: i64) -> String {
    let output = Command::new("oathtool")
        .args(["--totp", "-b", secret, "-N", &format!("@{unix}")])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `oathtool` ({e}): install it (Debian/Ubuntu: apt-get install oathtool)"
            )
        });
    assert!(
        output.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let code = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "unexpected oathtool output `{code}`"
    );
    code
}
