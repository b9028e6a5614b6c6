//! A node config file's text, as a mounted ConfigMap could hold it: refused with the fields
//! named, or accepted, in which case writing it out and reading it back gives the same config.
#![no_main]

use bedside_crds::MediaNodeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = MediaNodeConfig::from_yaml(text) {
        let again = MediaNodeConfig::from_yaml(&config.to_yaml()).expect("a config it wrote");
        assert_eq!(again, config);
    }
});
