//! The stored-record blob (`Record::from_blob`: files, Memcached items, redb) and the value
//! codec (`codec::decode_value`, `codec::value_to_json`, what the CLI's `show` prints). The
//! input is a blob; the values of a blob that decodes are fed to the value decoders too.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sessionkit_core::Record;
use sessionkit_core::codec::{decode_value, value_to_json};

#[derive(serde::Deserialize)]
#[allow(dead_code)] // decoded, never read
struct Cart {
    items: Vec<String>,
    total_cents: u64,
    note: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    match Record::from_blob(data) {
        Ok(record) => {
            // What decodes encodes again, to a blob that decodes to the same record.
            let blob = record.to_blob().expect("a decoded record encodes");
            assert_eq!(Record::from_blob(&blob).expect("re-decodes"), record);
            for value in record.data.values() {
                values(value);
            }
        }
        Err(err) => assert_eq!(err.kind(), sessionkit_core::ErrorKind::Codec, "{err}"),
    }
    // The blob's body, and the whole input, as one value.
    values(data.get(1..).unwrap_or_default());
    values(data);
});

fn values(bytes: &[u8]) {
    if let Ok(json) = value_to_json("k", bytes) {
        let _ = json.to_string();
    }
    let _ = decode_value::<u64>("k", bytes);
    let _ = decode_value::<String>("k", bytes);
    let _ = decode_value::<Vec<String>>("k", bytes);
    let _ = decode_value::<BTreeMap<String, f64>>("k", bytes);
    let _ = decode_value::<Cart>("k", bytes);
    let _ = decode_value::<serde_json::Value>("k", bytes);
}
