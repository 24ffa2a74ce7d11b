//! The agent's moving parts: a reader thread meters each interval into the
//! spool; a delivery task (run by the caller) empties the spool into the
//! sinks; an HTTP server exposes metrics and probes; a holder, another
//! process, keeps the netlink sockets open across a kill.
//!
//! ```text
//! DESTROY events --(listener thread)--+
//!                                      v
//! zeroing dump --(reader thread)--> enrich + classify --> batcher --> spool
//!                                                                      |
//!                              sinks <--(delivery task, retries)-------+
//! ```

mod batcher;
pub mod coverage;
pub mod ended;
pub mod handover;
pub mod holder;
pub mod http;
pub mod journal;
pub mod metrics;
mod reader;
pub mod routes;
pub mod talkers;
pub mod workloads;

pub use batcher::Batcher;
pub use reader::{unix_seconds, EventListener, Metering, Reader, PENDING};
pub use workloads::PerWorkload;
