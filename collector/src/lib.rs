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
//! command line over it. Each module is one stage: [`conntrack`] reads the
//! table exactly (a zeroing dump and the DESTROY events of connections that
//! end between reads); [`inventory`] knows who holds which address;
//! [`enrich`] and [`classify`] turn entries into flow records with both ends
//! named and a billing category; [`sink`] delivers batches exactly once to
//! ClickHouse (whose schema tollgate owns and migrates) and Parquet files;
//! [`agent`] runs them together on a node, configured by [`config`];
//! [`export`] turns a month of metering into priced per-team reports;
//! [`input`] checks what a person gives any command, one message per mistake.

pub mod agent;
pub mod classify;
pub mod config;
pub mod conntrack;
pub mod enrich;
pub mod export;
pub mod input;
pub mod inventory;
mod prefetch;
pub mod reconcile;
pub mod sink;
#[cfg(test)]
mod test_support;
