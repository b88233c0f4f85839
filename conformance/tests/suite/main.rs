//! The conformance scenarios, one module per area, built into one test binary.
//!
//! One binary rather than one per file: nextest lists every test binary twice before the first
//! test runs (its tests, then its ignored tests), and under TCG in the VM tier each of those
//! runs costs ~0.1 s — 19 binaries made ~2 s of a guest's time to its first test. The host
//! links one 50 MB binary instead of 19, too. Each scenario still runs in a process of its
//! own (nextest), so modules share nothing at run time.
//!
//! Run one area with a filter on the module path, e.g.
//! `cargo nextest run -p conformance -E 'test(/^network::/)'`.

mod bad_input;
mod detached;
mod detached_errors;
mod exec;
mod filesystem;
mod image_bad_input;
mod image_interop;
mod images;
mod isolation;
mod layer_storage;
mod lifecycle;
mod limits;
mod logs;
mod network;
mod oci_clients;
mod oci_runtime;
mod process;
mod security;
mod tty;
mod volumes;
