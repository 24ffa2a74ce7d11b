//! tollgate: network-cost metering for Kubernetes.
//!
//! tollgate reads the kernel's connection-tracking table on every node and
//! turns it into exact per-workload byte counts. Data flows one way:
//!
//! ```text
//! conntrack (kernel) -> entries -> enrichment -> classification -> sinks
//! ```
//!
//! This crate holds the collector's library; the `tollgate` binary is a thin
//! command line over it. Today it contains the first stage, [`conntrack`]:
//! an exact reader of the table (a zeroing dump) and of the connections that
//! end between two reads (DESTROY events); and the ClickHouse schema the
//! records are stored in, which tollgate owns and migrates ([`sink`]).

pub mod agent;
pub mod classify;
pub mod config;
pub mod conntrack;
pub mod enrich;
pub mod inventory;
pub mod sink;
