//! Debouncing for the file watchers (policy tree, TLS pair): an editor or a rotation by
//! rename fires several events for one change, and the watchers act once it has settled.
//!
//! Owns only the waiting; what to reload is the caller's.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// After an event, waits until `rx` has been quiet for `quiet`. False when the sender is gone
/// (the watcher was dropped), so the caller's thread ends.
pub fn settled(rx: &Receiver<()>, quiet: Duration) -> bool {
    loop {
        match rx.recv_timeout(quiet) {
            Ok(()) => continue,
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}
