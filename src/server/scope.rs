//! The request scope: what every step of one request shares without threading it through
//! every signature — its request id (and the id an untrusted client sent, recorded as
//! `client_request_id`, F2), and the journal acknowledgements the response must wait for.
//!
//! Why a task-local: every authorization decision of a request (service or API) is written to
//! the decision log, and no response may leave before its decisions are durable (SPEC D1, and
//! "every response a client received has its decision"). `authorize` queues the record and
//! registers its acknowledgement here; `pipeline::handle` awaits them all before it returns the
//! response. A step that awaits a later journal entry (the ledger record) finds the earlier
//! acknowledgements already resolved, because the journal is FIFO.
//!
//! The ledger record of a call depends on these entries ([`dependencies`]): the writer commits
//! it only if they committed, in the same batch or an earlier one, so a call whose decision
//! failed is answered 503 and never charged (issue 17 item 1).

use std::future::Future;

use parking_lot::Mutex;

use crate::ids::RequestId;
use crate::journal::{Acknowledgement, Dependency, JournalError};

/// One request's shared state.
pub struct RequestScope {
    request_id: RequestId,
    client_request_id: Option<RequestId>,
    pending: Mutex<Vec<Acknowledgement>>,
}

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// Runs `fut` inside a fresh scope for `request_id`, then waits until every journal entry it
/// submitted is durable. The second value is the first journal failure, if any.
pub async fn run<F: Future>(
    request_id: RequestId,
    client_request_id: Option<RequestId>,
    fut: F,
) -> (F::Output, Result<(), JournalError>) {
    let scope = RequestScope {
        request_id,
        client_request_id,
        pending: Mutex::new(Vec::new()),
    };
    SCOPE
        .scope(scope, async move {
            let output = fut.await;
            let pending = SCOPE.with(|s| std::mem::take(&mut *s.pending.lock()));
            let mut result = Ok(());
            for ack in pending {
                if let Err(e) = ack.await
                    && result.is_ok()
                {
                    result = Err(e);
                }
            }
            (output, result)
        })
        .await
}

/// The current request's id; a fresh one outside a request (CLI, background tasks).
pub fn request_id() -> RequestId {
    SCOPE
        .try_with(|s| s.request_id.clone())
        .unwrap_or_else(|_| RequestId::generate())
}

/// The id the client sent when it is not the request's own (it came from an untrusted peer);
/// `None` outside a request.
pub fn client_request_id() -> Option<RequestId> {
    SCOPE
        .try_with(|s| s.client_request_id.clone())
        .ok()
        .flatten()
}

/// The journal entries of the current request so far (its decision records), for an entry that
/// must commit only if they did; empty outside a request.
pub fn dependencies() -> Vec<Dependency> {
    SCOPE
        .try_with(|s| {
            s.pending
                .lock()
                .iter()
                .map(Acknowledgement::dependency)
                .collect()
        })
        .unwrap_or_default()
}

/// Registers an acknowledgement the response must wait for. Outside a request it is awaited
/// in the background (nobody is waiting for a response).
pub fn must_be_durable(ack: Acknowledgement) {
    if SCOPE.try_with(|_| ()).is_ok() {
        SCOPE.with(|s| s.pending.lock().push(ack));
    } else {
        tokio::spawn(async move {
            if let Err(e) = ack.await {
                tracing::error!(error = %e, "journal entry outside a request was not written");
            }
        });
    }
}
