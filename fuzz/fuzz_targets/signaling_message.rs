//! Every text frame a client can send: parsed into a message, or refused with a short, plain
//! error that carries nothing of the input back (the seed corpus plants a marker to find).
#![no_main]

use bedside_media_node::protocol::{MAX_MESSAGE_BYTES, parse};
use libfuzzer_sys::fuzz_target;

/// In the seeds' fields; no error text of the node's contains it.
const MARKER: &str = "ZQXJ";

fuzz_target!(|text: &str| {
    match parse(text) {
        Err(e) => {
            assert!(
                e.message.len() <= 256,
                "an error message of {} bytes",
                e.message.len()
            );
            assert!(
                e.message.is_ascii(),
                "non-ASCII in an error: part of the input?"
            );
            assert!(
                !e.message.contains(MARKER),
                "the error echoes the input: {}",
                e.message
            );
        }
        Ok(_) => assert!(text.len() <= MAX_MESSAGE_BYTES),
    }
});
