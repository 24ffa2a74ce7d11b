//! Reconciliation with the cloud bill: how much of a month's billed
//! network transfer tollgate's metering explains, per node and category
//! (coverage), and the billed cost split over teams in proportion to their
//! metered bytes, the unexplained rest a line of its own (allocation).

pub mod bill;
pub mod ledger;
pub mod metered;
pub mod nat;
pub mod report;
pub mod split;
pub mod write;
