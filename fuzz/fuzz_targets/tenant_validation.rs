//! Any JSON object as a HealthcareTenant: the CRD's schema and CEL rules answer with
//! violations or none, and what they admit is a tenant the operator can read.
#![no_main]

use bedside_crds::HealthcareTenant;
use bedside_crds::validation::TenantValidator;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static VALIDATOR: TenantValidator = TenantValidator::new().expect("the CRD's rules compile");
}

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let admitted = VALIDATOR.with(|v| v.validate(&object).is_empty());
    if admitted {
        serde_json::from_value::<HealthcareTenant>(object).expect("an admitted tenant reads");
    }
});
