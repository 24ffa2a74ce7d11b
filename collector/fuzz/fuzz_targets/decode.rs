//! Any byte string handed to the ctnetlink decoder yields entries or errors,
//! never a panic, an overflow or an endless loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::conntrack::decode::{messages, messages_skipping_idle};

fuzz_target!(|datagram: &[u8]| {
    for read in [messages, messages_skipping_idle] {
        let mut count = 0usize;
        for message in read(datagram) {
            if let Err(error) = message {
                // Errors must render (they name the offset and attribute).
                assert!(!error.to_string().is_empty());
            }
            count += 1;
        }
        // Every message is at least a 16-byte netlink header.
        assert!(count <= datagram.len() / 16 + 1);
    }
});
