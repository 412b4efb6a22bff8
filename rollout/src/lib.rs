//! Pure decision core.
