//! Authentication: passwords, TOTP, tokens and access keys. (Being built.)
