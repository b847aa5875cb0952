//! Connection caps at accept (issue 16 item 4): at most `max_connections` open client connections
//! in all and `max_connections_per_ip` from one address (trusted proxies exempt). A connection
//! over a cap is closed as soon as it is accepted, before any byte is read, so a flood costs one
//! accept and one close, never a file descriptor held.
//!
//! The global cap is lowered at start to what the process's file-descriptor limit can hold, so
//! the gateway never reaches "too many open files" through client connections and keeps serving
//! the connections it has. This module must not read or write a byte of a connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// File descriptors kept for everything that is not a client connection: the database, the
/// journal, logs, the policy watcher, the listener, the runtime.
const RESERVED_FDS: usize = 64;

/// The open connections, in all and per client address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open.
    Total,
    /// `max_connections_per_ip` connections from this address are open.
    PerIp,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    counted_per_ip: bool,
}

// === impl ConnectionLimits ===

impl ConnectionLimits {
    /// Caps of `max_total` (lowered to fit the file-descriptor limit) and `max_per_ip`.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        let max_total = match fd_budget() {
            Some(budget) if budget < max_total => {
                tracing::warn!(
                    configured = max_total,
                    effective = budget,
                    "server.max_connections lowered to what the open-file limit (ulimit -n) can hold; raise the limit to serve more"
                );
                budget
            }
            _ => max_total,
        };
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_ip,
            open: Mutex::new(Open::default()),
        })
    }

    /// The effective global cap.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Takes a place for a connection from `ip`, or says which cap is full. `exempt` peers (the
    /// trusted proxies) count toward the total only.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, exempt: bool) -> Result<ConnectionSlot, Refusal> {
        let mut open = self.open.lock();
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        if !exempt {
            let count = open.per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                return Err(Refusal::PerIp);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
            counted_per_ip: !exempt,
        })
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        self.open.lock().total
    }
}

// === impl ConnectionSlot ===

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        open.total = open.total.saturating_sub(1);
        if self.counted_per_ip
            && let Some(count) = open.per_ip.get_mut(&self.ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Client connections the open-file limit can hold: each may need one more descriptor for its
/// upstream connection, and `RESERVED_FDS` stay for the rest of the process. `None` when the
/// limit cannot be read (not Linux) or is unlimited.
fn fd_budget() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = open_files_soft_limit(&limits)?;
    Some(soft.saturating_sub(RESERVED_FDS) / 2)
}

/// The soft "Max open files" value of a `/proc/self/limits` text.
fn open_files_soft_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63704                63704                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_soft_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_files_soft_limit(unlimited), None);
    }

    #[test]
    fn caps_count_per_ip_and_in_total_and_free_on_drop() {
        let limits = Arc::new(ConnectionLimits {
            max_total: 3,
            max_per_ip: 2,
            open: Mutex::new(Open::default()),
        });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = limits.admit(a, false).unwrap();
        let _second = limits.admit(a, false).unwrap();
        assert_eq!(limits.admit(a, false).unwrap_err(), Refusal::PerIp);
        let _proxy = limits.admit(a, true).unwrap();
        assert_eq!(limits.admit(b, false).unwrap_err(), Refusal::Total);
        drop(first);
        let _b = limits.admit(b, false).unwrap();
        assert_eq!(limits.open(), 3);
    }
}
