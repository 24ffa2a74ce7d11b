//! Shared helpers for tollgate suites.
