//! Moves WAL checkpoints off the journal writer's commit path (SQLite only).
//!
//! SQLite checkpoints on commit by default: every ~1000 WAL pages, the committing connection
//! copies the WAL into the database file and fsyncs it, and every call waiting in that batch
//! waits for it too. The writer's connection turns that off (`wal_autocheckpoint = 0`) and this
//! thread, on its own connection, runs a `PASSIVE` checkpoint every [`INTERVAL`]: it copies what
//! no reader still needs, never blocks the writer, and lets the WAL restart from the beginning
//! once it has caught up. Durability does not depend on it: a commit is durable in the WAL.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::db::{Conn, Database, params};

/// How often the checkpointer runs.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The checkpointer thread; it stops when this handle is dropped.
pub struct Checkpointer {
    _stop: Sender<()>,
}

// === impl Checkpointer ===

impl Checkpointer {
    /// Starts checkpointing `db` in the background, if it is SQLite, and turns automatic
    /// checkpoints off on `writer`; `None` on PostgreSQL (which checkpoints by itself) or if
    /// the thread cannot start (then the writer keeps SQLite's automatic checkpoints).
    pub fn start(db: &Database, writer: &Conn) -> Option<Self> {
        writer.as_sqlite()?;
        let conn = db.connect().ok()?;
        let (stop, stopped) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tollgate-checkpoint".into())
            .spawn(move || run(&conn, &stopped))
            .ok()?;
        if let Err(e) = writer.execute_batch("PRAGMA wal_autocheckpoint = 0") {
            tracing::warn!(error = %e, "cannot move WAL checkpoints off the journal writer");
        }
        Some(Self { _stop: stop })
    }
}

fn run(conn: &Conn, stopped: &Receiver<()>) {
    loop {
        match stopped.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // A busy or failed checkpoint is retried next time; the WAL only grows meanwhile.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", params![], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint skipped");
        }
    }
}
