//! Turns on the kernel settings exact metering depends on, in the current
//! network namespace, or explains precisely why it could not.

use std::fs;
use std::io;
use std::path::PathBuf;

/// A `net.netfilter.*` setting tollgate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Dotted sysctl name.
    pub name: &'static str,
    /// Why tollgate needs it (shown when it cannot be set).
    pub why: &'static str,
}

/// Per-connection byte and packet counters: without them there is nothing to
/// meter.
pub const ACCOUNTING: Setting = Setting {
    name: "net.netfilter.nf_conntrack_acct",
    why: "without it conntrack entries carry no byte counters",
};

/// Start and stop timestamps on entries and DESTROY events.
pub const TIMESTAMPS: Setting = Setting {
    name: "net.netfilter.nf_conntrack_timestamp",
    why: "without it ended connections carry no start/stop time",
};

/// Conntrack events, always on. The kernel default, 2, attaches the event
/// extension only to connections created while a listener exists, so a
/// connection opened before the agent started would end silently.
pub const EVENTS: Setting = Setting {
    name: "net.netfilter.nf_conntrack_events",
    why: "without it connections that end between two reads are never reported",
};

/// A setting that could not be turned on.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The sysctl file is missing: conntrack is not loaded.
    #[error(
        "{name} does not exist ({path}): the nf_conntrack module is not loaded in this kernel; \
         load it with `modprobe nf_conntrack`"
    )]
    Missing {
        /// Setting name.
        name: &'static str,
        /// File path.
        path: PathBuf,
    },
    /// Writing was refused.
    #[error(
        "cannot set {name}=1 ({why}): {cause}. tollgate needs CAP_NET_ADMIN in this network \
         namespace to enable it (run as root or grant the capability), or set it beforehand \
         with `sysctl -w {name}=1`{}",
        read_only_hint(cause)
    )]
    Denied {
        /// Setting name.
        name: &'static str,
        /// Why tollgate needs it.
        why: &'static str,
        /// The write error (part of the message, not a separate cause).
        cause: io::Error,
    },
    /// Reading failed or returned something that is not a number.
    #[error("cannot read {name} from {path}: {detail}")]
    Unreadable {
        /// Setting name.
        name: &'static str,
        /// File path.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// A container's `/proc/sys` is read-only whatever its capabilities.
fn read_only_hint(cause: &io::Error) -> &'static str {
    if cause.kind() == io::ErrorKind::ReadOnlyFilesystem {
        "; in a container, /proc/sys is read-only: run `tollgate conntrack enable --proc-sys DIR` \
         with the host's /proc/sys/net/netfilter mounted under DIR/net/netfilter (the \
         DaemonSet's init container does)"
    } else {
        ""
    }
}

/// What [`ensure`] did for one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It already had a suitable value.
    AlreadySet,
    /// tollgate changed it to 1.
    Enabled,
}

/// Every setting exact metering needs.
pub const ALL: [Setting; 3] = [ACCOUNTING, TIMESTAMPS, EVENTS];

/// Make sure `setting` is on in the current network namespace.
pub fn ensure(setting: Setting) -> Result<Outcome, SysctlError> {
    ensure_in(setting, std::path::Path::new("/proc/sys"))
}

/// [`ensure`] through a procfs `sys` directory mounted elsewhere: a
/// container's own `/proc/sys` is read-only, the host's mounted at another
/// path is not (the write still needs CAP_NET_ADMIN).
pub fn ensure_in(setting: Setting, proc_sys: &std::path::Path) -> Result<Outcome, SysctlError> {
    ensure_at(setting, &path_of(proc_sys, setting.name))
}

fn path_of(proc_sys: &std::path::Path, name: &str) -> PathBuf {
    proc_sys.join(name.replace('.', "/"))
}

fn ensure_at(setting: Setting, path: &std::path::Path) -> Result<Outcome, SysctlError> {
    let current = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SysctlError::Missing {
                name: setting.name,
                path: path.to_owned(),
            })
        }
        Err(e) => {
            return Err(SysctlError::Unreadable {
                name: setting.name,
                path: path.to_owned(),
                detail: e.to_string(),
            })
        }
    };
    let value: u32 = current
        .trim()
        .parse()
        .map_err(|_| SysctlError::Unreadable {
            name: setting.name,
            path: path.to_owned(),
            detail: format!("{:?} is not a number", current.trim()),
        })?;
    if value == 1 {
        return Ok(Outcome::AlreadySet);
    }
    fs::write(path, b"1").map_err(|cause| SysctlError::Denied {
        name: setting.name,
        why: setting.why,
        cause,
    })?;
    Ok(Outcome::Enabled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    /// A file holding `content`, in a directory removed with the returned
    /// guard.
    fn temp_file(name: &str, content: &str) -> (TempDir, PathBuf) {
        let dir = TempDir::new(&format!("sysctl-{name}"));
        let path = dir.join("value");
        fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn names_map_to_proc_paths() {
        assert_eq!(
            path_of(
                std::path::Path::new("/proc/sys"),
                "net.netfilter.nf_conntrack_acct"
            ),
            PathBuf::from("/proc/sys/net/netfilter/nf_conntrack_acct")
        );
    }

    #[test]
    fn enables_a_disabled_setting_and_leaves_an_enabled_one() {
        let (_dir, path) = temp_file("off", "0\n");
        assert_eq!(ensure_at(ACCOUNTING, &path).unwrap(), Outcome::Enabled);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1");
        assert_eq!(ensure_at(ACCOUNTING, &path).unwrap(), Outcome::AlreadySet);
    }

    #[test]
    fn events_in_listener_mode_are_switched_to_always() {
        let (_dir, path) = temp_file("events", "2\n");
        assert_eq!(ensure_at(EVENTS, &path).unwrap(), Outcome::Enabled);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1");
    }

    #[test]
    fn a_missing_file_names_the_module() {
        let err = ensure_at(
            ACCOUNTING,
            std::path::Path::new("/nonexistent/nf_conntrack_acct"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("modprobe nf_conntrack"), "{err}");
    }

    #[test]
    fn garbage_is_reported_with_the_path() {
        let (_dir, path) = temp_file("garbage", "yes\n");
        let err = ensure_at(ACCOUNTING, &path).unwrap_err();
        assert!(err.to_string().contains("is not a number"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
