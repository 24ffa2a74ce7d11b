//! The flow record: one row per local endpoint, connection and interval.
//!
//! It is declared once, in the `flow_record!` invocation below. From that
//! one list come the Rust type [`FlowRecord`], its borrowed form
//! [`FlowView`] (what the enricher builds), the ClickHouse column list
//! [`COLUMNS`] (which `sql/`'s `flows` table is tested against on real
//! ClickHouse), the compact form's field order, the [`Columns`] a compact
//! run is read into column by column and, with the `arrow` feature, the
//! Arrow schema.
//!
//! A record describes a connection from the point of view of one endpoint
//! that lives on the observing node (a pod, or the node itself): `local_*`
//! is that endpoint, `remote_*` the other end, and bytes are counted as that
//! endpoint `sent` and `received`. A connection between two pods on two nodes
//! is therefore recorded twice, once by each node, each record carrying its
//! own endpoint's direction; see `docs/metering.md` for how metering bills
//! each byte once.

use std::net::Ipv6Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Family, Protocol};

/// A name in a record (pod, namespace, zone...): shared, immutable text.
///
/// Records repeat the same few thousand names millions of times; the
/// inventory interns each once and every record holding it shares the one
/// allocation, so building a record copies pointers, not text, and a
/// compact run ([`crate::compact::Rows`]) recognises a repeated name by its
/// address.
pub type Name = Arc<str>;

/// How a field of a [`FlowRecord`] appears in a [`FlowView`]: a name
/// borrowed, every other value copied.
pub trait ViewField {
    /// The field's type in a view.
    type View<'a>: Copy
    where
        Self: 'a;

    /// The field, borrowed.
    fn view(&self) -> Self::View<'_>;

    /// The field owned again.
    fn owned(view: Self::View<'_>) -> Self;
}

impl ViewField for Name {
    type View<'a> = &'a Name;

    fn view(&self) -> &Name {
        self
    }

    fn owned(view: &Name) -> Name {
        view.clone()
    }
}

/// Fields a view holds by value.
macro_rules! copied_in_views {
    ($($t:ty),+) => {$(
        impl ViewField for $t {
            type View<'a> = $t;

            fn view(&self) -> $t {
                *self
            }

            fn owned(view: $t) -> $t {
                view
            }
        }
    )+};
}

copied_in_views!(u16, u32, u64, bool, Ipv6Addr, Family, Protocol, Category, RemoteKind, Initiator);

/// One column of the flows table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name (also the Rust field name and the Arrow field name).
    pub name: &'static str,
    /// ClickHouse type, exactly as `DESCRIBE TABLE` prints it.
    pub clickhouse_type: &'static str,
    /// What the column holds.
    pub doc: &'static str,
}

/// One field of a record in an older compact version: read if the version
/// has it, absent otherwise.
macro_rules! field_at {
    ($input:ident, $version:ident, $rust:ty) => {
        <$rust as crate::compact::Field>::get_at($input, $version)?
    };
    ($input:ident, $version:ident, $rust:ty, $since:literal) => {
        if $version >= $since {
            <$rust as crate::compact::Field>::get_at($input, $version)?
        } else {
            <$rust as crate::compact::Absent>::absent()
        }
    };
}

macro_rules! flow_record {
    ($( $(#[doc = $doc:literal])+ $(#[since = $since:literal])? $field:ident : $rust:ty = $clickhouse:literal, )+) => {
        /// One row of the `flows` table: what one local endpoint sent to and
        /// received from one remote endpoint over one connection during one
        /// interval. Field order is column order.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
        pub struct FlowRecord {
            $(
                $(#[doc = $doc])+
                $(
                    #[doc = concat!("\n\nAdded in compact version ", $since, "; optional in input.")]
                    #[serde(default)]
                )?
                pub $field: $rust,
            )+
        }

        /// One chunk of a compact run's records, column by column, as the
        /// compact form stores them (see [`crate::columns`]).
        #[derive(Default)]
        pub struct Columns {
            $( $field: Vec<<$rust as crate::columns::ColumnField>::Item>, )+
            len: usize,
        }

        impl Columns {
            pub(crate) fn clear(&mut self) {
                $( self.$field.clear(); )+
                self.len = 0;
            }

            /// Appends one record read from `input`.
            pub(crate) fn push(&mut self, input: &mut crate::compact::Input<'_>) -> Option<()> {
                use crate::columns::ColumnField;
                $( self.$field.push(<$rust as ColumnField>::get_item(input)?); )+
                self.len += 1;
                Some(())
            }

            /// How many records.
            pub fn len(&self) -> usize {
                self.len
            }

            /// No records.
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// Every column's values, in [`COLUMNS`] order.
            pub fn values(&self) -> [crate::columns::ColumnValues<'_>; COLUMNS.len()] {
                use crate::columns::ColumnField;
                [ $( <$rust as ColumnField>::values(&self.$field, $clickhouse), )+ ]
            }
        }

        /// A flow record whose names are borrowed: what the enricher builds
        /// for each connection and the batcher encodes, so making a record
        /// copies pointers and touches no reference count.
        #[derive(Debug, Clone, Copy, PartialEq, Serialize)]
        #[cfg_attr(feature = "clickhouse", derive(clickhouse::Row))]
        pub struct FlowView<'a> {
            $( $(#[doc = $doc])+ pub $field: <$rust as ViewField>::View<'a>, )+
        }

        impl FlowRecord {
            /// This record with its names borrowed.
            pub fn view(&self) -> FlowView<'_> {
                FlowView { $( $field: ViewField::view(&self.$field), )+ }
            }
        }

        impl FlowView<'_> {
            /// An owned copy (each name's reference count taken).
            pub fn to_record(&self) -> FlowRecord {
                FlowRecord { $( $field: ViewField::owned(self.$field), )+ }
            }
        }

        /// Writes `record`'s fields, in column order, in the spool's
        /// compact form.
        pub(crate) fn put_compact(
            record: &FlowView<'_>,
            names: &mut crate::compact::Names,
            out: &mut Vec<u8>,
        ) {
            use crate::compact::Put;
            $( record.$field.put(names, out); )+
        }

        /// Reads one record written by [`put_compact`], its names borrowed
        /// from the run's table.
        pub(crate) fn get_compact<'a>(
            input: &mut crate::compact::Input<'a>,
        ) -> Option<FlowView<'a>> {
            use crate::compact::Field;
            Some(FlowView { $( $field: <$rust as Field>::get(input)?, )+ })
        }

        /// Reads one record written in compact `version` (at least
        /// [`crate::compact::OLDEST_READABLE`]): a field added after it
        /// reads as absent.
        pub(crate) fn get_compact_at<'a>(
            input: &mut crate::compact::Input<'a>,
            version: u8,
        ) -> Option<FlowView<'a>> {
            Some(FlowView { $( $field: field_at!(input, version, $rust $(, $since)?), )+ })
        }

        /// The columns of the `flows` table, in order.
        pub const COLUMNS: &[Column] = &[
            $( Column {
                name: stringify!($field),
                clickhouse_type: $clickhouse,
                doc: concat!($($doc),+),
            }, )+
        ];
    };
}

flow_record! {
    /// End of the interval the bytes were counted in (UTC, seconds).
    observed_at: u32 = "DateTime('UTC')",
    /// Length of that interval in seconds (0 for a connection that ended
    /// before the first read).
    interval_seconds: u32 = "UInt32",
    /// Cluster name, from the agent's configuration.
    cluster: Name = "LowCardinality(String)",
    /// The node that observed the connection; the local endpoint lives on it.
    node: Name = "LowCardinality(String)",
    /// `ipv4` or `ipv6`.
    family: Family = "LowCardinality(String)",
    /// `tcp`, `udp`, `icmp`, `icmpv6`, ... or the protocol number as text.
    protocol: Protocol = "LowCardinality(String)",
    /// Local endpoint's address (IPv4 stored IPv4-mapped).
    local_ip: Ipv6Addr = "IPv6",
    /// Local endpoint's port (0 for protocols without ports).
    local_port: u16 = "UInt16",
    /// Local pod name; empty for the node itself.
    local_pod: Name = "LowCardinality(String)",
    /// Local pod's namespace.
    local_namespace: Name = "LowCardinality(String)",
    /// Kind of the local pod's owning workload (Deployment, StatefulSet,
    /// DaemonSet, CronJob, Job, ReplicaSet, Pod, Node).
    local_workload_kind: Name = "LowCardinality(String)",
    /// Name of the local pod's owning workload.
    local_workload: Name = "LowCardinality(String)",
    /// Team the local workload belongs to.
    local_team: Name = "LowCardinality(String)",
    /// Zone of the observing node.
    local_zone: Name = "LowCardinality(String)",
    /// Region of the observing node.
    local_region: Name = "LowCardinality(String)",
    /// Cloud provider of the observing node (`aws`, `gcp`, `azure`: its
    /// `spec.providerID`, or the static inventory's `provider`); empty when
    /// unknown, and prices then follow the cluster's provider.
    #[since = 3]
    local_provider: Name = "LowCardinality(String)",
    /// The observing node's `spec.providerID` as the node declares it
    /// (`aws:///eu-west-1a/i-0abc...`, `gce://project/zone/name`,
    /// `azure:///subscriptions/...`), or the static inventory's
    /// `provider_id`: the instance a cloud bill names. Empty when unknown.
    #[since = 4]
    local_provider_id: Name = "LowCardinality(String)",
    /// Remote endpoint's address (IPv4 stored IPv4-mapped).
    remote_ip: Ipv6Addr = "IPv6",
    /// Remote endpoint's port (0 for protocols without ports).
    remote_port: u16 = "UInt16",
    /// What the remote endpoint is.
    remote_kind: RemoteKind = "LowCardinality(String)",
    /// Remote pod name, when it is a pod.
    remote_pod: Name = "LowCardinality(String)",
    /// Remote pod's namespace.
    remote_namespace: Name = "LowCardinality(String)",
    /// Kind of the remote pod's owning workload.
    remote_workload_kind: Name = "LowCardinality(String)",
    /// Name of the remote pod's owning workload.
    remote_workload: Name = "LowCardinality(String)",
    /// Team the remote workload belongs to.
    remote_team: Name = "LowCardinality(String)",
    /// Node of the remote endpoint, when in the cluster.
    remote_node: Name = "LowCardinality(String)",
    /// Zone of the remote endpoint, when known.
    remote_zone: Name = "LowCardinality(String)",
    /// Region of the remote endpoint, when known.
    remote_region: Name = "LowCardinality(String)",
    /// Cloud provider of the remote address (aws, gcp, azure), when known.
    remote_cloud_provider: Name = "LowCardinality(String)",
    /// Cloud service of the remote address (e.g. S3), when known.
    remote_cloud_service: Name = "LowCardinality(String)",
    /// `namespace/name` of the Service the connection was made through (a
    /// ClusterIP, a NodePort, a load balancer's address), on the client's
    /// and the backend's records.
    remote_service: Name = "LowCardinality(String)",
    /// Which endpoint opened the connection.
    initiator: Initiator = "LowCardinality(String)",
    /// Layer-3 bytes the local endpoint sent.
    bytes_sent: u64 = "UInt64",
    /// Layer-3 bytes the local endpoint received.
    bytes_received: u64 = "UInt64",
    /// Packets the local endpoint sent.
    packets_sent: u64 = "UInt64",
    /// Packets the local endpoint received.
    packets_received: u64 = "UInt64",
    /// Billing category of the transfer.
    category: Category = "LowCardinality(String)",
    /// The connection ended in this interval (from a DESTROY event).
    ended: bool = "Bool",
    /// The kernel's conntrack id of the connection (with node and time,
    /// it finds the connection again in forensics).
    conntrack_id: u32 = "UInt32",
}

/// Declares a closed set of values stored as text, with its names.
macro_rules! text_enum {
    ($(#[doc = $doc:literal])* $name:ident { $( $(#[doc = $vdoc:literal])* $variant:ident = $text:literal, )+ }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[doc = $vdoc])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }

            /// The value for stored text.
            pub fn from_text(text: &str) -> Option<Self> {
                match text { $( $text => Some($name::$variant), )+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<str>::deserialize(d)?;
                $name::from_text(&text).ok_or_else(|| {
                    let known: &[&str] = &[$($text),+];
                    serde::de::Error::custom(format!(
                        "unknown {} {text:?} (one of: {})", stringify!($name), known.join(", ")
                    ))
                })
            }
        }
    };
}

text_enum! {
    /// The billing category of a transfer.
    Category {
        /// Both ends in the same zone: usually free.
        SameZone = "same_zone",
        /// Different zones of one region: usually billed in both directions.
        CrossZone = "cross_zone",
        /// Different regions: billed on egress.
        CrossRegion = "cross_region",
        /// A public internet address: billed on egress.
        Internet = "internet",
        /// A cloud provider's service (object storage, managed databases...).
        CloudService = "cloud_service",
        /// Not enough is known to classify.
        Unknown = "unknown",
        /// A public address in the local region that customers of the
        /// provider rent (AWS bills it each way, even within a zone).
        PublicInRegion = "public_in_region",
    }
}

text_enum! {
    /// What the remote endpoint of a record is.
    RemoteKind {
        /// A pod of this cluster.
        Pod = "pod",
        /// A node of this cluster (host network).
        Node = "node",
        /// A Service's ClusterIP whose backend is not known.
        Service = "service",
        /// A cloud provider's service.
        CloudService = "cloud_service",
        /// A public internet address.
        Internet = "internet",
        /// Anything else.
        Unknown = "unknown",
    }
}

text_enum! {
    /// Which endpoint opened the connection.
    Initiator {
        /// The local endpoint (the conntrack original direction starts here;
        /// for the hop a node forwards to a Service's backend on another
        /// node, this node, which opened it).
        Local = "local",
        /// The remote endpoint.
        Remote = "remote",
    }
}

#[cfg(feature = "arrow")]
mod arrow {
    use std::fmt::Write as _;
    use std::sync::Arc;

    use arrow_array::builder::StringBuilder;
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, BooleanArray, DictionaryArray, Int32Array, RecordBatch,
        TimestampMillisecondArray, UInt16Array, UInt32Array, UInt64Array,
    };
    use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};

    use super::COLUMNS;
    use crate::columns::ColumnValues;

    /// The Arrow schema of a flow record, derived from [`COLUMNS`]: text
    /// columns dictionary-encoded, IPs as text in ClickHouse's IPv6 form
    /// (`::ffff:10.0.0.1`, castable with `toIPv6`), timestamps as UTC
    /// timestamps (millisecond unit, whole seconds).
    pub fn arrow_schema() -> Schema {
        Schema::new(
            COLUMNS
                .iter()
                .map(|c| Field::new(c.name, arrow_type(c.clickhouse_type), false))
                .collect::<Vec<_>>(),
        )
    }

    /// The Arrow type for one of the ClickHouse types the record uses.
    fn arrow_type(clickhouse: &str) -> DataType {
        match clickhouse {
            // Parquet has no second-unit timestamp: milliseconds keep the
            // column a timestamp for every reader.
            "DateTime('UTC')" => DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC"))),
            "LowCardinality(String)" => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            "IPv6" => DataType::Utf8,
            "UInt16" => DataType::UInt16,
            "UInt32" => DataType::UInt32,
            "UInt64" => DataType::UInt64,
            "Bool" => DataType::Boolean,
            other => unreachable!("flow record column type {other} has no Arrow mapping"),
        }
    }

    impl crate::columns::Columns {
        /// The chunk as one Arrow record batch with [`arrow_schema()`]'s
        /// columns; name columns index `names` (the run's name table).
        pub fn to_record_batch(&self, names: &ArrayRef) -> Result<RecordBatch, ArrowError> {
            let columns = self
                .values()
                .into_iter()
                .map(|values| array(values, names))
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(Arc::new(arrow_schema()), columns)
        }
    }

    /// One Arrow column of [`arrow_type`]'s type.
    fn array(values: ColumnValues<'_>, names: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        Ok(match values {
            ColumnValues::Timestamp(seconds) => Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    seconds.iter().map(|&s| i64::from(s) * 1000),
                )
                .with_timezone("UTC"),
            ),
            ColumnValues::UInt16(v) => Arc::new(UInt16Array::from(v.to_vec())),
            ColumnValues::UInt32(v) => Arc::new(UInt32Array::from(v.to_vec())),
            ColumnValues::UInt64(v) => Arc::new(UInt64Array::from(v.to_vec())),
            ColumnValues::Bool(v) => Arc::new(BooleanArray::from(v.to_vec())),
            ColumnValues::Ip(ips) => {
                // Neighbouring rows often repeat an address: format it once.
                let mut builder = StringBuilder::new();
                let mut text = String::new();
                let mut last = None;
                for ip in ips {
                    if last != Some(*ip) {
                        text.clear();
                        let _ = write!(text, "{ip}");
                        last = Some(*ip);
                    }
                    builder.append_value(&text);
                }
                Arc::new(builder.finish())
            }
            ColumnValues::Name(keys) => {
                let keys = keys.iter().map(|&k| k as i32).collect::<Int32Array>();
                Arc::new(DictionaryArray::<Int32Type>::try_new(keys, names.clone())?)
            }
            ColumnValues::Code(codes, text) => {
                // The chunk's own dictionary: each code's text once.
                let mut key_of = [-1i32; 256];
                let mut dictionary = StringBuilder::new();
                let mut next = 0;
                let keys: Int32Array = codes
                    .iter()
                    .map(|&code| {
                        let key = &mut key_of[usize::from(code)];
                        if *key < 0 {
                            dictionary.append_value(text(code));
                            *key = next;
                            next += 1;
                        }
                        *key
                    })
                    .collect();
                Arc::new(DictionaryArray::<Int32Type>::try_new(
                    keys,
                    Arc::new(dictionary.finish()),
                )?)
            }
        })
    }
}

#[cfg(feature = "arrow")]
pub use arrow::arrow_schema;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn columns_are_unique_and_documented() {
        let mut names: Vec<_> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
        assert!(COLUMNS.iter().all(|c| !c.doc.trim().is_empty()));
    }

    /// Records of earlier versions (files to `tollgate load`) lack the
    /// provider: it reads as empty; any other missing or unknown key is
    /// still refused.
    #[test]
    fn the_provider_is_optional_in_input_and_follows_the_region() {
        let record: FlowRecord = serde_json::from_str(SAMPLE).unwrap();
        assert_eq!(&*record.local_provider, "");
        let with = SAMPLE.replace(
            r#""local_region":"r","#,
            r#""local_region":"r","local_provider":"aws","#,
        );
        let record: FlowRecord = serde_json::from_str(&with).unwrap();
        assert_eq!(&*record.local_provider, "aws");
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<FlowRecord>(&json).unwrap(), record);
        assert!(
            serde_json::from_str::<FlowRecord>(&SAMPLE.replace("\"local_zone\":\"z\",", ""))
                .is_err()
        );
        assert!(
            serde_json::from_str::<FlowRecord>(&with.replace("local_provider", "provider"))
                .is_err()
        );
        let names: Vec<_> = COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(names[14..16], ["local_region", "local_provider"]);
    }

    #[test]
    fn text_enums_round_trip() {
        for category in Category::ALL {
            assert_eq!(Category::from_text(category.as_str()), Some(*category));
            let json = serde_json::to_string(category).unwrap();
            assert_eq!(serde_json::from_str::<Category>(&json).unwrap(), *category);
        }
        assert!(serde_json::from_str::<RemoteKind>("\"moon\"").is_err());
    }

    #[cfg(feature = "arrow")]
    #[test]
    fn the_arrow_schema_follows_the_columns_and_records_fit_it() {
        let schema = arrow_schema();
        assert_eq!(schema.fields().len(), COLUMNS.len());
        for (field, column) in schema.fields().iter().zip(COLUMNS) {
            assert_eq!(field.name(), column.name);
        }
        let record: FlowRecord = serde_json::from_str(SAMPLE).unwrap();
        let mut other = record.clone();
        other.protocol = Protocol(47);
        other.local_pod = Name::from("q");
        let rows: crate::compact::Rows = [&record, &other, &record].into_iter().collect();
        let batches: Vec<_> = rows.record_batches(2).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [2, 1]
        );
        assert!(batches.iter().all(|b| b.schema().as_ref() == &schema));
        let pods = batches[0]
            .column_by_name("local_pod")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::DictionaryArray<arrow_array::types::Int32Type>>()
            .unwrap()
            .downcast_dict::<arrow_array::StringArray>()
            .unwrap();
        use arrow_array::ArrayAccessor;
        assert_eq!((pods.value(0), pods.value(1)), ("p", "q"));
    }

    pub(crate) const SAMPLE: &str = r#"{"observed_at":1,"interval_seconds":10,"cluster":"c","node":"n","family":"ipv4",
        "protocol":"tcp","local_ip":"::ffff:10.0.0.1","local_port":1,"local_pod":"p","local_namespace":"ns",
        "local_workload_kind":"Deployment","local_workload":"w","local_team":"t","local_zone":"z","local_region":"r",
        "remote_ip":"2001:db8::1","remote_port":2,"remote_kind":"internet","remote_pod":"","remote_namespace":"",
        "remote_workload_kind":"","remote_workload":"","remote_team":"","remote_node":"","remote_zone":"",
        "remote_region":"","remote_cloud_provider":"","remote_cloud_service":"","remote_service":"",
        "initiator":"local","bytes_sent":100,"bytes_received":50,"packets_sent":1,"packets_received":1,
        "category":"internet","ended":false,"conntrack_id":9}"#;
}
