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
/// `<origin>-m<random run id>-<seq>`. The `m` says the batch leaves markers
/// in ClickHouse (migration 0010), so a batch of unknown fate can be
/// completed exactly ([`is_marked`]); tokens of earlier builds lack it.
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
            prefix: format!("{origin}-m{:016x}", u64::from_le_bytes(nonce)),
        })
    }

    /// The token of batch `seq`.
    pub fn token(&self, seq: u64) -> String {
        format!("{}-{seq}", self.prefix)
    }
}

/// Whether `token` was made by a [`TokenMaker`] of this format: its run id
/// is `m` and 16 hex digits. ClickHouse's views recognize the same pattern.
pub fn is_marked(token: &str) -> bool {
    let mut parts = token.rsplit('-');
    let seq = parts.next().unwrap_or_default();
    let run = parts.next().unwrap_or_default();
    parts.next().is_some()
        && !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
        && run.len() == 17
        && run.starts_with('m')
        && run[1..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
        assert!(a.token(7).starts_with("node-1-m") && a.token(7).ends_with("-7"));
    }

    #[test]
    fn only_this_format_is_marked() {
        assert!(is_marked(&TokenMaker::new("node-1").unwrap().token(12)));
        assert!(is_marked("n-m0123456789abcdef-0"));
        // An earlier build's run id, and tokens users may give by hand.
        assert!(!is_marked("node-1-0123456789abcdef-12"));
        assert!(!is_marked("m0123456789abcdef-12"));
        assert!(!is_marked("n-m0123456789abcdef-"));
        assert!(!is_marked("n-m0123456789abcdeg-1"));
        assert!(!is_marked(""));
    }
}
