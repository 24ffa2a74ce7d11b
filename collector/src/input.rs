//! What a person gives tollgate, checked before anything happens: the text
//! of input files, the directories and files it will write, names, numbers
//! and flow records, each against a stated limit.
//!
//! Every kind of input (the configuration, the static inventory, range
//! files, prices, flow records, command-line values) reads through these
//! helpers, so one mistake gets one message wherever it is made: the file
//! and line (and column), or the field, flag or environment variable, then
//! what is wrong. Every error made here is an [`InputError`]: the command
//! line exits with code 2 for it, and with 1 only for failures of the world
//! (a server down, a disk full).

use std::fmt::Display;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use tollgate_schema::{Family, FlowRecord};

/// A mistake in what was given: its message names where (file and line,
/// field, flag or environment variable) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

impl InputError {
    /// `what` about `place` (a file, `file:line`, a field or a flag).
    pub fn at(place: impl Display, what: impl Display) -> Self {
        Self(format!("{place}: {what}"))
    }
}

/// A line of a small table file (prices, accounts) that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct BadLine {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl BadLine {
    /// A maker of errors about lines of `file`.
    pub fn of(file: &str) -> impl Fn(usize, String) -> BadLine + '_ {
        move |line, message| BadLine {
            file: file.to_owned(),
            line,
            message,
        }
    }
}

/// Reads a small table file (`what` names it if it cannot be read) and
/// parses it with `parse`, which names the file and line at fault.
pub fn read_table<T>(
    what: &str,
    path: &Path,
    parse: fn(&str, &str) -> Result<T, BadLine>,
) -> Result<T, InputError> {
    let text = read_text(what, path)?;
    parse(&path.display().to_string(), &text).map_err(|e| InputError(e.to_string()))
}

/// The lines of a small table file (prices, accounts) that hold data:
/// numbered from 1, trimmed, without blank lines and `#` comments.
pub fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Longest name (pod, namespace, workload, team, node, zone, cluster...)
/// accepted in a record or an inventory: a Kubernetes object name is at
/// most 253 bytes, and a Service is named `namespace/name`.
pub const NAME_MAX_BYTES: usize = 320;

/// Longest line of a JSON-lines input (one flow record): a record whose
/// every name is as long as allowed takes about 8 KiB.
pub const LINE_MAX_BYTES: usize = 64 * 1024;

/// Largest spool, in MiB (1 TiB): any larger value is a typo, and the
/// byte count must not overflow.
pub const SPOOL_CAP_MAX_MIB: u64 = 1 << 20;

/// Most records in one batch: one INSERT and one spool file each.
pub const BATCH_ROWS_MAX: u64 = 10_000_000;

/// Longest wait any duration setting accepts, in seconds (a day).
pub const SECONDS_MAX: u64 = 86_400;

/// Most per-workload series one agent may expose: beyond it, a scrape of
/// every node costs Prometheus more than the metering is worth.
pub const WORKLOAD_SERIES_MAX: u64 = 100_000;

/// Most top talkers logged per interval.
pub const TOP_TALKERS_MAX: u64 = 1000;

/// Reads the text file `path`, the `what` of this command (e.g. "config",
/// "inventory"): a missing or unreadable file, a directory, or bytes that are
/// not UTF-8 (with the line and column of the first) are input mistakes.
pub fn read_text(what: &str, path: &Path) -> Result<String, InputError> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(what, path, &e))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let (line, column) = position(valid);
        InputError(format!(
            "{what} {}:{line}:{column}: not UTF-8 text (byte 0x{:02x})",
            path.display(),
            e.as_bytes()[valid.len()]
        ))
    })
}

/// Line and column (1-based, in characters) just after `text`.
fn position(text: &[u8]) -> (usize, usize) {
    let line = text.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&text[start..]).chars().count() + 1;
    (line, column)
}

/// The message for an input file that cannot be read.
pub fn unreadable(what: &str, path: &Path, error: &io::Error) -> InputError {
    let why = match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::IsADirectory => "is a directory, not a file".to_owned(),
        _ => error.to_string(),
    };
    InputError(format!("{what} {}: cannot read: {why}", path.display()))
}

/// Checks that an input file can be opened for reading (before any work
/// that would be wasted if it cannot).
pub fn readable_file(what: &str, path: &Path) -> Result<(), InputError> {
    if path.is_dir() {
        return Err(unreadable(
            what,
            path,
            &io::Error::from(io::ErrorKind::IsADirectory),
        ));
    }
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| unreadable(what, path, &e))
}

/// Makes sure `dir` (named `what`, e.g. `--spool` or `sinks.spool.dir`) is a
/// directory tollgate can write, or can create: it is a directory, or its
/// nearest existing ancestor is, and a file can be made there (a probe,
/// removed at once; nothing is created). Not a directory, or not writable,
/// is an input mistake found here rather than at the first write.
pub fn writable_dir(what: &str, dir: &Path) -> Result<(), InputError> {
    let bad = |why: String| InputError(format!("{what} {}: {why}", dir.display()));
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Err(bad(if existing == dir {
            "is not a directory".into()
        } else {
            format!(
                "cannot create it: {} is not a directory",
                existing.display()
            )
        }));
    }
    can_create_in(existing).map_err(|e| {
        let place = if existing == dir {
            "in it".to_owned()
        } else {
            format!("in {}, to create it", existing.display())
        };
        bad(format!("cannot write {place}: {}", reason(&e)))
    })
}

/// Two directories tollgate writes (e.g. the spool and the Parquet files)
/// must not be one inside the other: each would find the other's files.
pub fn separate_dirs(a: (&str, &Path), b: (&str, &Path)) -> Result<(), InputError> {
    let absolute = |path: &Path| {
        std::path::absolute(path)
            .map(|p| p.components().collect::<std::path::PathBuf>())
            .unwrap_or_else(|_| path.to_owned())
    };
    let (first, second) = (absolute(a.1), absolute(b.1));
    if first.starts_with(&second) || second.starts_with(&first) {
        return Err(InputError(format!(
            "{} {} and {} {}: give two separate directories",
            a.0,
            a.1.display(),
            b.0,
            b.1.display()
        )));
    }
    Ok(())
}

/// Checks that the output file `path` (named by `what`, e.g. `--out`) can
/// be written: its directory exists and is writable, and it is not itself a
/// directory. `-` (standard output) always can.
pub fn writable_output(what: &str, path: &Path) -> Result<(), InputError> {
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let bad = |why: String| InputError(format!("{what} {}: {why}", path.display()));
    if path.is_dir() {
        return Err(bad("is a directory".into()));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad(format!("directory {} does not exist", dir.display())));
    }
    can_create_in(dir)
        .map_err(|e| bad(format!("cannot write in {}: {}", dir.display(), reason(&e))))
}

/// Creates a file in `dir` and removes it at once: whether tollgate may
/// write there, leaving nothing behind.
fn can_create_in(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".tollgate-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe))
}

fn reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::ReadOnlyFilesystem => "read-only file system".to_owned(),
        io::ErrorKind::NotADirectory => "a part of the path is not a directory".to_owned(),
        // procfs and sysfs answer a new file with ENOENT.
        io::ErrorKind::NotFound => "the file system does not take new files there".to_owned(),
        _ => error.to_string(),
    }
}

/// Checks a name given in a file or on the command line: `required` ones
/// must not be empty; none may exceed [`NAME_MAX_BYTES`] or hold control
/// characters.
pub fn check_name(field: &str, value: &str, required: bool) -> Result<(), String> {
    if required && value.trim().is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    if value.len() > NAME_MAX_BYTES {
        return Err(format!(
            "{field}: {} bytes long; names are at most {NAME_MAX_BYTES} bytes",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field}: {value:?} holds a control character"));
    }
    Ok(())
}

/// Checks a name that becomes part of batch tokens and file names (the
/// node's name, `tollgate load --origin`): a Kubernetes node name's
/// characters only (letters, digits, `.`, `-`, `_`), at most 253 bytes.
pub fn check_token_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 253 {
        return Err(format!("{value:?} must be 1 to 253 bytes long"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{value:?} holds {c:?}: use letters, digits, '.', '-' and '_' (it names files and batches)"
        ));
    }
    Ok(())
}

/// Checks a network written as `address/length`: bits set beyond the
/// length are a typo (`10.1.2.3/8` was meant as `10.0.0.0/8`, or as one
/// address).
pub fn check_network(field: &str, network: &IpNet) -> Result<(), String> {
    if network.addr() != network.network() {
        return Err(format!(
            "{field}: {network} has bits set beyond its /{} prefix; write {} (or the address alone)",
            network.prefix_len(),
            network.trunc()
        ));
    }
    Ok(())
}

/// Checks a number against an inclusive range, naming the field or flag.
pub fn check_range<T: PartialOrd + Display>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, String> {
    if value < min || value > max {
        return Err(format!("{field}: {value} is not between {min} and {max}"));
    }
    Ok(value)
}

/// The earliest `observed_at` a record may carry (2000-01-01T00:00:00Z):
/// before it, the time is a mistake (0, or milliseconds read as seconds
/// would be far in the future instead).
pub const OBSERVED_AT_MIN: u32 = 946_684_800;

/// Checks what JSON cannot: a flow record's names within limits, its
/// cluster and node given, its addresses of its family, its time and
/// interval plausible, and bytes counted where packets were (and back).
/// `now` is the current Unix time: a record may not come from more than a
/// day ahead of it.
pub fn check_record(record: &FlowRecord, now: u64) -> Result<(), String> {
    if record.observed_at < OBSERVED_AT_MIN {
        return Err(format!(
            "observed_at: {} is before 2000-01-01 (Unix seconds are expected)",
            record.observed_at
        ));
    }
    if u64::from(record.observed_at) > now + SECONDS_MAX {
        return Err(format!(
            "observed_at: {} is more than a day in the future",
            record.observed_at
        ));
    }
    check_range(
        "interval_seconds",
        u64::from(record.interval_seconds),
        0,
        SECONDS_MAX,
    )?;
    for (direction, bytes, packets) in [
        ("sent", record.bytes_sent, record.packets_sent),
        ("received", record.bytes_received, record.packets_received),
    ] {
        if (bytes == 0) != (packets == 0) {
            return Err(format!(
                "bytes_{direction} {bytes} with packets_{direction} {packets}: every packet has bytes"
            ));
        }
    }
    for (field, value, required) in [
        ("cluster", &record.cluster, true),
        ("node", &record.node, true),
        ("local_pod", &record.local_pod, false),
        ("local_namespace", &record.local_namespace, false),
        ("local_workload_kind", &record.local_workload_kind, false),
        ("local_workload", &record.local_workload, false),
        ("local_team", &record.local_team, false),
        ("local_zone", &record.local_zone, false),
        ("local_region", &record.local_region, false),
        ("local_provider", &record.local_provider, false),
        ("local_provider_id", &record.local_provider_id, false),
        ("remote_pod", &record.remote_pod, false),
        ("remote_namespace", &record.remote_namespace, false),
        ("remote_workload_kind", &record.remote_workload_kind, false),
        ("remote_workload", &record.remote_workload, false),
        ("remote_team", &record.remote_team, false),
        ("remote_node", &record.remote_node, false),
        ("remote_zone", &record.remote_zone, false),
        ("remote_region", &record.remote_region, false),
        (
            "remote_cloud_provider",
            &record.remote_cloud_provider,
            false,
        ),
        ("remote_cloud_service", &record.remote_cloud_service, false),
        ("remote_service", &record.remote_service, false),
    ] {
        check_name(field, value, required)?;
    }
    for (field, address) in [
        ("local_ip", record.local_ip),
        ("remote_ip", record.remote_ip),
    ] {
        let family = family_of(address);
        if family != record.family {
            return Err(format!(
                "{field}: {} is an {} address, but family is {}",
                IpAddr::V6(address).to_canonical(),
                family.as_str(),
                record.family.as_str()
            ));
        }
    }
    Ok(())
}

/// IPv4 is stored IPv4-mapped.
fn family_of(address: Ipv6Addr) -> Family {
    if address.to_ipv4_mapped().is_some() {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn text_that_is_not_utf8_is_refused_at_its_line_and_column() {
        let dir = TempDir::new("input-utf8");
        let path = dir.join("c.yaml");
        std::fs::write(&path, b"cluster: a\nnode: b\xffc\n").unwrap();
        let error = read_text("config", &path).unwrap_err().to_string();
        assert!(
            error.ends_with("c.yaml:2:8: not UTF-8 text (byte 0xff)"),
            "{error}"
        );
        let missing = read_text("config", &dir.join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.ends_with("nope: cannot read: no such file"),
            "{missing}"
        );
        let directory = read_text("config", &dir).unwrap_err().to_string();
        assert!(directory.contains("is a directory"), "{directory}");
    }

    #[test]
    fn directories_and_outputs_are_checked_before_use() {
        let dir = TempDir::new("input-dirs");
        let file = dir.join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(writable_dir("--spool", &dir.join("new/sub")).is_ok());
        assert!(!dir.join("new").exists(), "a check creates nothing");
        let error = writable_dir("--spool", &dir.join("f/sub"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("f is not a directory"), "{error}");
        assert!(
            separate_dirs(("--spool", &dir.join("a")), ("--parquet", &dir.join("a/b"))).is_err()
        );
        assert!(separate_dirs(("--spool", &dir.join("a")), ("--parquet", &dir.join("ab"))).is_ok());
        let error = writable_dir("--spool", &file).unwrap_err().to_string();
        assert!(error.ends_with("f: is not a directory"), "{error}");
        assert!(writable_dir("--spool", Path::new("/proc/tollgate")).is_err());
        assert!(writable_output("--out", &dir.join("report.csv")).is_ok());
        assert!(writable_output("--out", Path::new("-")).is_ok());
        let error = writable_output("--out", &dir.join("missing/report.csv"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not exist"), "{error}");
        assert!(writable_output("--out", &dir).is_err());
        assert!(writable_output("--out", Path::new("/proc/report.csv")).is_err());
    }

    #[test]
    fn names_networks_and_numbers_have_limits() {
        assert!(check_name("cluster", "", true).is_err());
        assert!(check_name("local_pod", "", false).is_ok());
        assert!(check_name("local_pod", &"p".repeat(NAME_MAX_BYTES), false).is_ok());
        assert!(check_name("local_pod", &"p".repeat(NAME_MAX_BYTES + 1), false).is_err());
        assert!(check_name("node", "a\nb", true).is_err());
        assert!(check_token_name("ip-10-0-1-7.eu-west-1.compute.internal").is_ok());
        assert!(check_token_name("a/b").is_err());
        assert!(check_token_name("").is_err());
        let network: IpNet = "10.1.2.3/8".parse().unwrap();
        let error = check_network("in_zone[0]", &network).unwrap_err();
        assert!(error.contains("write 10.0.0.0/8"), "{error}");
        assert!(check_network("x", &"10.0.0.0/8".parse().unwrap()).is_ok());
        assert!(check_network("x", &"fd00::1/128".parse().unwrap()).is_ok());
        assert_eq!(check_range("--n", 5u64, 1, 10), Ok(5));
        assert!(check_range("--n", 0u64, 1, 10).is_err());
    }

    #[test]
    fn a_record_must_agree_with_its_family() {
        let mut record: FlowRecord =
            serde_json::from_str(crate::test_support::SAMPLE_RECORD).unwrap();
        assert_eq!(check_record(&record, 1_800_000_000), Ok(()));
        record.remote_ip = "fd00::2".parse().unwrap();
        let error = check_record(&record, 1_800_000_000).unwrap_err();
        assert!(
            error.starts_with("remote_ip: fd00::2 is an ipv6 address"),
            "{error}"
        );
        record.remote_ip = "::ffff:10.0.0.2".parse().unwrap();
        record.node = "".into();
        assert!(check_record(&record, 1_800_000_000)
            .unwrap_err()
            .starts_with("node:"));
        record.node = "n".into();
        record.packets_sent = 0;
        assert!(check_record(&record, 1_800_000_000)
            .unwrap_err()
            .starts_with("bytes_sent 100 with packets_sent 0"));
        record.packets_sent = 1;
        record.observed_at = 0;
        assert!(check_record(&record, 1_800_000_000)
            .unwrap_err()
            .starts_with("observed_at:"));
        record.observed_at = 4_000_000_000;
        assert!(check_record(&record, 1_800_000_000)
            .unwrap_err()
            .contains("in the future"));
    }
}
