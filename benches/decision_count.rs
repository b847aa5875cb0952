//! A fixed-count driver for one Cedar decision (issue 9: decision cost flat in the number of
//! accounts), for instruction counts under callgrind, where criterion's adaptive iteration counts
//! get in the way. Loads the `pipeline` bench's tree with ACCOUNTS account folders and decides
//! the same request (the 6th account's reader, `storage:GetObject`) DECISIONS times.
//!
//! ```sh
//! cargo build --release --example decision_count
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='decision_count::run' \
//!     $CARGO_TARGET_DIR/release/examples/decision_count 10000 2000
//! ```
//!
//! `--after N` first loads (and drops) an N-account tree, as the criterion group does before its
//! 10,000-account case: what the heap looks like when the timed decisions run matters.
//! `--load-thread` loads the tree on another thread, as the gateway does (it loads on the main
//! thread or a reload thread and decides on runtime workers): with glibc's malloc each thread
//! allocates from its own arena, so the loader's leftovers are not where decisions allocate.

use std::hint::black_box;
use std::time::Instant;

use tollgate::authz::{PolicySnapshot, Request, load_tree};

#[path = "support.rs"]
mod support;

fn load(accounts: usize) -> PolicySnapshot {
    let config = support::shipped_config();
    let required = config.route_actions();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    support::policy_tree(dir.path(), accounts);
    load_tree(dir.path(), &required).unwrap_or_else(|e| panic!("{e}"))
}

/// The measured part; callgrind's `--toggle-collect` names it.
#[inline(never)]
fn run(snapshot: &PolicySnapshot, request: &Request, decisions: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..decisions {
        if black_box(snapshot.decide(black_box(request))).is_allow() {
            allowed += 1;
        }
    }
    allowed
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut numbers = Vec::new();
    let mut after = None;
    let mut load_thread = false;
    while let Some(arg) = args.next() {
        if arg == "--load-thread" {
            load_thread = true;
        } else if arg == "--after" {
            after = args.next().and_then(|n| n.parse::<usize>().ok());
        } else {
            numbers.push(
                arg.parse::<usize>()
                    .unwrap_or_else(|e| panic!("`{arg}`: {e}")),
            );
        }
    }
    let (accounts, decisions) = match numbers.as_slice() {
        [a, d] => (*a, *d),
        _ => panic!("usage: decision_count [--after N] [--load-thread] ACCOUNTS DECISIONS"),
    };
    if let Some(n) = after {
        drop(load(n));
    }
    let snapshot = if load_thread {
        std::thread::spawn(move || load(accounts))
            .join()
            .unwrap_or_else(|_| panic!("load panicked"))
    } else {
        load(accounts)
    };
    let request = support::decision_request(&support::account_id(5));
    // Warm up (first-touch allocations, lazy statics) outside the measured count.
    assert_eq!(run(&snapshot, &request, 10), 10);
    let started = Instant::now();
    let allowed = run(&snapshot, &request, decisions);
    let elapsed = started.elapsed();
    assert_eq!(allowed, decisions);
    println!(
        "{accounts} accounts: {decisions} decisions in {elapsed:?} ({:.2} us each)",
        elapsed.as_secs_f64() * 1e6 / decisions as f64
    );
}
