//! Any buffered line and any host name framed for syslog over TLS (RFC 5425 octet counting):
//! the count is the message's length, and the RFC 5424 header keeps its fields in place
//! (HOSTNAME and APP-NAME printable, without spaces), whatever the name holds.
#![no_main]

use bedside_audit::delivery::syslog::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (line, hostname) = input;
    let framed = frame(line, hostname, "bedside-media-node");
    let (count, message) = framed.split_once(' ').expect("LEN SP MSG");
    assert_eq!(
        count.parse::<usize>().expect("a decimal count"),
        message.len()
    );
    let header: Vec<&str> = message.splitn(7, ' ').collect();
    assert!(header.len() == 7, "a header of 6 fields: {message:?}");
    let host = header[2];
    assert!(!host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_graphic()));
    assert_eq!(&header[3..6], ["bedside-media-node", "-", "audit"]);
});
