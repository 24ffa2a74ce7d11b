//! Where records go: the stores tollgate writes to, and the schemas it owns
//! there.

pub mod clickhouse;
