//! What the unit tests share.

use std::path::{Path, PathBuf};

use crate::conntrack::{Counters, Entry, Origin, Tuple, L4};

/// One flow record as `tollgate load` reads it.
pub(crate) const SAMPLE_RECORD: &str = r#"{"observed_at":1790000000,"interval_seconds":10,"cluster":"c","node":"n","family":"ipv4",
        "protocol":"tcp","local_ip":"::ffff:10.0.0.1","local_port":1,"local_pod":"p","local_namespace":"ns",
        "local_workload_kind":"Deployment","local_workload":"w","local_team":"t","local_zone":"z","local_region":"r",
        "remote_ip":"::ffff:10.0.0.2","remote_port":2,"remote_kind":"pod","remote_pod":"","remote_namespace":"",
        "remote_workload_kind":"","remote_workload":"","remote_team":"","remote_node":"","remote_zone":"",
        "remote_region":"","remote_cloud_provider":"","remote_cloud_service":"","remote_service":"",
        "initiator":"local","bytes_sent":100,"bytes_received":50,"packets_sent":1,"packets_received":1,
        "category":"same_zone","ended":false,"conntrack_id":9}"#;

/// A small deterministic generator of pseudo-random numbers.
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// An empty directory under the system's temporary one, named for this
/// process and `name`, removed with everything in it when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An ended TCP connection from `port`, moving `port` bytes each way.
pub(crate) fn ended(port: u16) -> Entry {
    let tuple = Tuple {
        src: "10.0.0.1".parse().expect("an address"),
        dst: "10.0.0.2".parse().expect("an address"),
        l4: L4::Ports { src: port, dst: 80 },
    };
    let counters = Counters {
        packets: 3,
        bytes: u64::from(port),
    };
    Entry {
        origin: Origin::Ended,
        ..Entry::tcp(tuple, tuple, Some(counters), Some(counters))
    }
}
