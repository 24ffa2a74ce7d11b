-- tollgate's tables as views over a directory of Parquet files written by the Parquet sink, so
-- that sql/forensics/*.sql and the metering query run unchanged on files. Run with
-- clickhouse-local (or any ClickHouse that may read the directory), in a scratch database:
--
--   clickhouse local --param_dir /data/tollgate/flows \
--     --queries-file sql/parquet/views.sql --queries-file sql/forensics/top_talkers.sql \
--     --param_from '2026-11-22 00:00:00' --param_to '2026-11-23 00:00:00' --param_limit 20
--
-- The files' columns are the flows table's, with timestamps as UTC timestamps and IPs as text;
-- the views turn them back into DateTime and IPv6. Over S3, replace the first statement's
-- file(...) with s3('https://bucket.s3.amazonaws.com/flows/**/*.parquet', 'Parquet').
-- Rollups here are computed on the fly from the raw records.
--
-- The file list is taken when `flows_files` is attached: a long-lived server sees files written
-- since only after `DETACH TABLE flows_files; ATTACH TABLE flows_files` (clickhouse-local, run
-- per query, always sees them all).
--
-- The columns are given, as the Parquet sink writes them, rather than inferred: a file of an
-- earlier version lacks the columns added since (local_provider, local_provider_id) and reads
-- them as empty, and inference would take the columns of whichever file it reads first. A test
-- holds this list equal to the schema crate's.
CREATE TABLE flows_files AS file({dir:String} || '/**/*.parquet', Parquet, '
    observed_at DateTime64(3, \'UTC\'), interval_seconds UInt32, cluster String,
    node String, family String, protocol String, local_ip String, local_port UInt16,
    local_pod String, local_namespace String, local_workload_kind String,
    local_workload String, local_team String, local_zone String, local_region String,
    local_provider String, local_provider_id String, remote_ip String, remote_port UInt16,
    remote_kind String, remote_pod String, remote_namespace String, remote_workload_kind String,
    remote_workload String, remote_team String, remote_node String, remote_zone String,
    remote_region String, remote_cloud_provider String, remote_cloud_service String,
    remote_service String, initiator String, bytes_sent UInt64, bytes_received UInt64,
    packets_sent UInt64, packets_received UInt64, category String, ended Bool,
    conntrack_id UInt32'
);

CREATE VIEW flows AS
SELECT * EXCEPT (observed_at, local_ip, remote_ip),
    toDateTime(observed_at, 'UTC') AS observed_at,
    toIPv6(local_ip) AS local_ip,
    toIPv6(remote_ip) AS remote_ip
FROM flows_files;

CREATE VIEW flows_1m AS
SELECT
    toStartOfMinute(observed_at) AS period,
    cluster, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
    local_region, remote_kind, remote_namespace, remote_workload_kind, remote_workload,
    remote_team, remote_zone, remote_region, remote_cloud_provider, remote_cloud_service,
    category, initiator, local_provider,
    sum(bytes_sent) AS bytes_sent,
    sum(bytes_received) AS bytes_received,
    sum(packets_sent) AS packets_sent,
    sum(packets_received) AS packets_received,
    count() AS records
FROM flows
GROUP BY ALL;

CREATE VIEW flows_1h AS
SELECT toStartOfHour(period) AS period, * EXCEPT (period, bytes_sent, bytes_received, packets_sent, packets_received, records),
    sum(bytes_sent) AS bytes_sent, sum(bytes_received) AS bytes_received,
    sum(packets_sent) AS packets_sent, sum(packets_received) AS packets_received, sum(records) AS records
FROM flows_1m
GROUP BY ALL;

CREATE VIEW flows_1d AS
SELECT toStartOfDay(period) AS period, * EXCEPT (period, bytes_sent, bytes_received, packets_sent, packets_received, records),
    sum(bytes_sent) AS bytes_sent, sum(bytes_received) AS bytes_received,
    sum(packets_sent) AS packets_sent, sum(packets_received) AS packets_received, sum(records) AS records
FROM flows_1h
GROUP BY ALL;

-- The same definition as sql/migrations/0014_local_provider.sql's metering_daily.
CREATE VIEW metering_daily AS
SELECT
    toDate(period) AS day,
    cluster,
    local_team AS team,
    local_namespace AS namespace,
    local_workload_kind AS workload_kind,
    local_workload AS workload,
    local_region AS region,
    category,
    direction,
    sum(counted) AS bytes,
    remote_region,
    sumIf(counted, initiator = 'local') AS initiated_bytes,
    local_provider AS record_provider
FROM flows_1d
ARRAY JOIN ['out', 'in'] AS direction, [bytes_sent, bytes_received] AS counted
GROUP BY ALL;
