//! Writes batches into the `flows` table with the `clickhouse` crate:
//! Native blocks ([`NativeBlocks`]), LZ4 on the wire, one INSERT per batch
//! carrying the batch's `insert_deduplication_token`.
//!
//! When the outcome of the previous write is unknown (the process started,
//! or a write failed), the batch is not simply sent again: ClickHouse may
//! hold it in some tables and shards and not in others, and its
//! deduplication log may name a part that a killed server never put in
//! place. A batch of this tollgate ([`is_marked`]) is instead completed
//! through `flows_repair`, whose views add it to each table, shard and
//! partition that lacks its marker (migration 0010). A batch of an earlier
//! build, spooled before an upgrade, has no markers: it is looked up in
//! `delivered_batches` and sent again unless stored in full.

use std::sync::atomic::{AtomicBool, Ordering};

use clickhouse::insert_formatted::CompressedData;
use clickhouse::{Client, Compression};

use super::native::{insert_statement, NativeBlocks};
use super::Connection;
use crate::sink::batch::is_marked;
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

/// A ClickHouse error while using `table`: transient unless it needs a
/// person.
fn failure(error: clickhouse::error::Error, table: &str) -> WriteError {
    let message = error.to_string();
    WriteError {
        sink: "clickhouse",
        transient: !NEEDS_A_PERSON.iter().any(|code| message.contains(code)),
        message: format!("{table}: {message}"),
    }
}

/// The ClickHouse sink.
pub struct ClickHouseSink {
    client: Client,
    /// The last write's outcome is unknown: its batch may be stored.
    uncertain: AtomicBool,
}

/// ClickHouse's default `max_insert_block_size`.
const DEFAULT_MAX_INSERT_BLOCK_SIZE: usize = 1_048_449;

/// A batch's records found in `delivered_batches`: per shard the largest
/// count recorded (a retry passing through the views may record it again),
/// summed over the shards.
const DELIVERED_RECORDS: &str = "SELECT toUInt64(sum(records)) FROM \
     (SELECT max(records) AS records FROM delivered_batches WHERE token = ? GROUP BY shardNum())";

impl ClickHouseSink {
    /// A sink writing to `connection`'s database.
    pub fn new(connection: &Connection) -> Result<Self, super::CaFileError> {
        Ok(Self {
            client: connection.client()?.with_database(&connection.database),
            uncertain: AtomicBool::new(true),
        })
    }

    /// An INSERT of `batch`'s records into `table` under `token`, in one
    /// block: every table it reaches gets one part per partition, holding
    /// that partition's marker.
    async fn insert(
        &self,
        table: &str,
        batch: &Batch,
        token: &str,
        deduplicate: bool,
    ) -> Result<(), WriteError> {
        let fail = |e| failure(e, table);
        let block_rows = batch
            .rows
            .len()
            .max(DEFAULT_MAX_INSERT_BLOCK_SIZE)
            .to_string();
        let completing = !deduplicate;
        let deduplicate = if deduplicate { "1" } else { "0" };
        let mut insert = self
            .client
            .insert_formatted_with(insert_statement(table))
            // A block whose column types differ from the table's is refused,
            // not converted: only `tollgate migrate` makes the table, and it
            // refuses columns that differ from the schema crate.
            .with_setting("input_format_native_allow_types_conversion", "0")
            // Every attempt of a batch runs under one id, and a completion
            // replaces an attempt still running inside the server (its
            // client killed or cut off): the markers it reads then show all
            // the earlier attempt stored, and nothing more can follow.
            .with_setting("query_id", format!("tollgate-{}", batch.token))
            .with_setting("replace_running_query", if completing { "1" } else { "0" })
            .with_setting("insert_deduplication_token", token)
            .with_setting("insert_deduplicate", deduplicate)
            // A retried batch must reach every rollup once, whatever the
            // server's default (off before ClickHouse 26.2: since 24.7 a
            // resent block goes through the views, which then insert it
            // again unless they deduplicate too).
            .with_setting(
                "deduplicate_blocks_in_dependent_materialized_views",
                deduplicate,
            )
            // Through a Distributed table, the batch is on its shard when
            // the INSERT returns, not in a queue the spool cannot see.
            .with_setting("distributed_foreground_insert", "1")
            // One batch, one INSERT, stored when it returns: the server's
            // buffer (on by default since ClickHouse 26) would only delay a
            // batch this large.
            .with_setting("async_insert", "0")
            // One block from the batch's Native blocks to every view's
            // output, whatever the batch's size: a marker vouches for its
            // whole partition, and `delivered_batches` gets one row per
            // shard with the batch's whole count.
            .with_setting("max_insert_block_size", block_rows.as_str())
            .with_setting("min_insert_block_size_rows", block_rows.as_str())
            .with_setting("min_insert_block_size_bytes", "0");
        let mut blocks = NativeBlocks::new(&batch.rows);
        let mut block = Vec::new();
        while let Some(written) = blocks.next_block(&mut block) {
            // A batch that cannot be read is never ended, so ClickHouse
            // stores none of it.
            written.map_err(|e| WriteError::unreadable_batch("clickhouse", batch.seq, &e))?;
            let compressed = CompressedData::new(&block, Compression::Lz4).map_err(fail)?;
            insert.send_compressed(compressed).await.map_err(fail)?;
        }
        insert.end().await.map_err(fail)?;
        Ok(())
    }

    /// Complete `batch` in every table, shard and partition that lacks it,
    /// exactly: each attempt reads the markers afresh, so one interrupted
    /// midway is finished by the next. `<token>#repair` is ignored by the
    /// chain views and recorded in no deduplication log.
    async fn complete(&self, batch: &Batch) -> Result<(), WriteError> {
        let token = format!("{}#repair", batch.token);
        self.insert("flows_repair", batch, &token, false)
            .await
            .map_err(|mut e| {
                if e.message.contains("Code: 60.") {
                    e.message.push_str(
                        " (flows_repair comes with migration 0010: run `tollgate migrate` \
                         with this version of tollgate)",
                    );
                }
                e
            })
    }

    /// Whether `batch` is stored already, in full. A batch stored in part
    /// (its rows spread over shards, one of which failed) is sent again:
    /// the shards that have it drop their part by its token.
    async fn delivered(&self, batch: &Batch) -> Result<bool, clickhouse::error::Error> {
        let records: u64 = self
            .client
            .query(DELIVERED_RECORDS)
            .bind(batch.token.as_str())
            .fetch_one()
            .await?;
        let expected = batch.rows.len() as u64;
        if records > 0 && records < expected {
            tracing::warn!(
                seq = batch.seq,
                records,
                expected,
                "batch stored in part; sending it again"
            );
        }
        Ok(records >= expected)
    }
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &'static str {
        crate::sink::CLICKHOUSE
    }

    async fn write(&self, batch: &Batch) -> Result<(), WriteError> {
        if self.uncertain.load(Ordering::Relaxed) {
            if is_marked(&batch.token) {
                self.complete(batch).await?;
                tracing::info!(
                    seq = batch.seq,
                    "batch of unknown fate completed where it was missing"
                );
                self.uncertain.store(false, Ordering::Relaxed);
                return Ok(());
            }
            let delivered = self
                .delivered(batch)
                .await
                .map_err(|e| failure(e, "delivered_batches"))?;
            if delivered {
                tracing::info!(
                    seq = batch.seq,
                    "batch was stored before its acknowledgement was lost; not sent again"
                );
                self.uncertain.store(false, Ordering::Relaxed);
                return Ok(());
            }
        }
        // Until ClickHouse answers, this batch may or may not be stored.
        self.uncertain.store(true, Ordering::Relaxed);
        self.insert("flows", batch, &batch.token, true).await?;
        self.uncertain.store(false, Ordering::Relaxed);
        Ok(())
    }
}
