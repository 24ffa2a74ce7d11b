//! Writes batches into the `flows` table with the `clickhouse` crate:
//! RowBinary, LZ4 on the wire, one INSERT per batch carrying the batch's
//! `insert_deduplication_token`.

use clickhouse::Client;
use tollgate_schema::FlowRecord;

use super::Connection;
use crate::sink::{Batch, Sink, WriteError};

/// ClickHouse error codes that need a person, not a retry: unknown table,
/// column or database, type mismatch, authentication.
const NEEDS_A_PERSON: [&str; 7] = [
    "Code: 16.",
    "Code: 47.",
    "Code: 60.",
    "Code: 81.",
    "Code: 53.",
    "Code: 516.",
    "Code: 192.",
];

/// The ClickHouse sink.
pub struct ClickHouseSink {
    client: Client,
}

impl ClickHouseSink {
    /// A sink writing to `connection`'s database.
    pub fn new(connection: &Connection) -> Result<Self, super::CaFileError> {
        Ok(Self {
            client: connection.client()?.with_database(&connection.database),
        })
    }
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    async fn write(&self, batch: &Batch) -> Result<(), WriteError> {
        let fail = |e: clickhouse::error::Error| {
            let message = e.to_string();
            WriteError {
                sink: "clickhouse",
                transient: !NEEDS_A_PERSON.iter().any(|code| message.contains(code)),
                message,
            }
        };
        let mut insert = self
            .client
            .insert::<FlowRecord>("flows")
            .await
            .map_err(fail)?
            .with_setting("insert_deduplication_token", batch.token.as_str())
            .with_setting("insert_deduplicate", "1");
        for record in &batch.records {
            insert.write(record).await.map_err(fail)?;
        }
        insert.end().await.map_err(fail)
    }
}
