//! A batch: the unit the sinks write, the spool keeps and a retry resends.

use tollgate_schema::compact::Rows;

/// Records written together, with the identity that makes a resend
/// harmless.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Position in this spool's order (increasing).
    pub seq: u64,
    /// `insert_deduplication_token`: fixed when the batch is formed and kept
    /// through every retry and restart, so ClickHouse drops a resend.
    pub token: String,
    /// Where the input resumes after this batch (for replayable inputs such
    /// as `tollgate load` files; 0 otherwise).
    pub resume_at: Resume,
    /// The records, in compact form.
    pub rows: Rows,
}

/// A position in a replayable input.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Resume {
    /// Byte offset of the next unread line.
    pub offset: u64,
    /// Its line number (1-based), for error messages.
    pub line: u64,
}

/// Makes batch tokens that are unique across nodes, processes and restarts:
/// `<origin>-<random run id>-<seq>`.
#[derive(Debug, Clone)]
pub struct TokenMaker {
    prefix: String,
}

impl TokenMaker {
    /// Tokens for batches formed by `origin` (e.g. the node name) in this
    /// process.
    pub fn new(origin: &str) -> std::io::Result<Self> {
        let mut nonce = [0u8; 8];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut nonce)?;
        Ok(Self {
            prefix: format!("{origin}-{:016x}", u64::from_le_bytes(nonce)),
        })
    }

    /// The token of batch `seq`.
    pub fn token(&self, seq: u64) -> String {
        format!("{}-{seq}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_between_runs_and_batches() {
        let a = TokenMaker::new("node-1").unwrap();
        let b = TokenMaker::new("node-1").unwrap();
        assert_ne!(a.token(1), b.token(1));
        assert_ne!(a.token(1), a.token(2));
        assert!(a.token(7).starts_with("node-1-") && a.token(7).ends_with("-7"));
    }
}
