//! `tollgate hold`: keep the agent's netlink sockets open across its kills.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tollgate::agent::holder;

use super::BadInput;

/// Holds a copy of the agent's netlink sockets (the zeroing requests' and
/// the subscription to ended connections), so that a SIGKILL or an OOM
/// kill of the agent loses nothing the kernel queued on them: the next
/// agent takes them over. Run beside the agent, in a second container of
/// its pod; the agent names the same socket in `agent.holder_socket`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The Unix socket to serve the agent on.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// How long to keep the sockets of an agent that does not come back,
    /// in seconds (1 to 86,400): a subscription nobody reads has the
    /// kernel keep ended connections waiting for their delivery.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    release_after: u64,
}

pub fn run(args: HoldArgs) -> anyhow::Result<()> {
    if !(1..=86_400).contains(&args.release_after) {
        return Err(BadInput(format!(
            "--release-after: {} is out of range (1 to 86,400 seconds)",
            args.release_after
        ))
        .into());
    }
    exit_on_termination();
    holder::serve(&args.socket, Duration::from_secs(args.release_after))?;
    Ok(())
}

/// Exits at once on SIGTERM or SIGINT: the holder has nothing to finish.
/// Needed because it runs as its container's PID 1, for which the kernel
/// ignores signals left at their default action: the pod would otherwise
/// wait out its whole grace period at every deletion.
#[allow(unsafe_code)]
fn exit_on_termination() {
    extern "C" fn exit(_: libc::c_int) {
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls `_exit`.
        unsafe { libc::signal(signal, exit as *const () as libc::sighandler_t) };
    }
}
