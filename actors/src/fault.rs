//! Test-only fault switch, compiled in only with the `fault-injection` cargo feature (the
//! workspace's own tests enable it through a dev-dependency; a release or `cargo install` build
//! never has it).
//!
//! A Canary annotated `fault.flagger.app/panic-tick: "true"` makes every tick of that canary
//! panic before it reads or writes anything, so tests can check that a panic restarts only that
//! canary's actor, from `.status`, and that the others keep their cadence. Removing the
//! annotation clears the fault.

use kube::ResourceExt;

use crate::crd::Canary;

/// The annotation that makes the canary's ticks panic.
pub const PANIC_TICK_ANNOTATION: &str = "fault.flagger.app/panic-tick";

/// Panics when `canary` asks for it (see the module docs).
pub fn panic_if_asked(canary: &Canary) {
    if canary
        .annotations()
        .get(PANIC_TICK_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        panic!(
            "injected fault: {PANIC_TICK_ANNOTATION} on canary {}.{}",
            canary.name_any(),
            canary.namespace().unwrap_or_default()
        );
    }
}
