-- The instance on each record. A record names the node that observed it by its spec.providerID
-- (local_provider_id: `aws:///eu-west-1a/i-0abc...`, or the static inventory's provider_id;
-- '' when unknown), so `tollgate reconcile` can match metered bytes to a bill's line items,
-- which name instances, even for nodes long gone. Only the raw tables carry it: the rollups
-- and metering views are unchanged.
--
-- DEFAULT '' so that agents of the previous version, which do not send the column, keep
-- inserting until they are upgraded (migrate first, then the agents).
ALTER TABLE $db.flows$local$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider_id LowCardinality(String) DEFAULT '' AFTER local_provider;

ALTER TABLE $db.flows_repair$local$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider_id LowCardinality(String) DEFAULT '' AFTER local_provider;

-- cluster-only
ALTER TABLE $db.flows$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider_id LowCardinality(String) DEFAULT '' AFTER local_provider;
-- cluster-only
ALTER TABLE $db.flows_repair$on_cluster
    ADD COLUMN IF NOT EXISTS local_provider_id LowCardinality(String) DEFAULT '' AFTER local_provider;

-- The raw repair view of 0014, copying the new column too.
ALTER TABLE $db.flows_repair_raw_mv$on_cluster MODIFY QUERY
WITH cityHash64(replaceOne(getSetting('insert_deduplication_token'), '#repair', '')) AS batch_hash
SELECT
    observed_at, interval_seconds, cluster, node, family, protocol, local_ip, local_port,
    local_pod, local_namespace, local_workload_kind, local_workload, local_team, local_zone,
    local_region, local_provider, local_provider_id, remote_ip, remote_port, remote_kind,
    remote_pod, remote_namespace, remote_workload_kind, remote_workload, remote_team, remote_node,
    remote_zone, remote_region, remote_cloud_provider, remote_cloud_service, remote_service,
    initiator, bytes_sent, bytes_received, packets_sent, packets_received, category, ended,
    conntrack_id, batch_hash AS batch
FROM $db.flows_repair$local
WHERE toDate(observed_at) NOT IN
    (SELECT DISTINCT toDate(observed_at) FROM $db.flows$local WHERE batch = batch_hash);
