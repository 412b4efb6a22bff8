//! Actors.
#![forbid(unsafe_code)]
