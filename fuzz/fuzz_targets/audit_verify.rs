//! Any file handed to `bedside-audit verify`: a verdict, never a panic; a verdict of intact
//! accounts for every non-empty line.
#![no_main]

use bedside_audit::AuditKey;
use bedside_audit::verify::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let key = AuditKey::new(&[7; 32]).expect("key");
    if let Ok(verified) = verify(text.lines(), &key) {
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(verified.records() + verified.duplicates(), lines);
    }
});
