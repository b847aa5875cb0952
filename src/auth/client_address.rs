//! The client address that password work is queued under and login failures are counted
//! against (SPEC U4): one value per client, as far as an address can tell.
//!
//! An IPv4 address is itself (an IPv4-mapped IPv6 address is the IPv4 one). An IPv6 address
//! counts as its /64: one subscriber is usually handed a whole /64, so counting single IPv6
//! addresses would give one client 2^64 fresh addresses to spread its guesses over. This module
//! does not decide which address a request came from; the server does (trusted proxies).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A client address as counted: an IPv4 address, or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(IpAddr);

// === impl ClientAddress ===

impl ClientAddress {
    pub fn new(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl From<IpAddr> for ClientAddress {
    fn from(ip: IpAddr) -> Self {
        Self::new(ip)
    }
}

impl fmt::Display for ClientAddress {
    /// `192.0.2.7`, or `2001:db8:1:2::/64`: the form the lockout table keys on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(s: &str) -> String {
        let ip: IpAddr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        ClientAddress::new(ip).to_string()
    }

    #[test]
    fn ipv4_is_itself_and_ipv6_counts_as_its_64() {
        assert_eq!(address("192.0.2.7"), "192.0.2.7");
        assert_eq!(address("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(address("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            address("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            address("2001:db8:1:2::")
        );
        assert_ne!(address("2001:db8:1:3::1"), address("2001:db8:1:2::1"));
    }
}
