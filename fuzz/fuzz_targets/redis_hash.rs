//! The Redis store's session hash: an `HGETALL` reply (RESP2 bytes, as the server sends them;
//! also as the RESP3 map a cluster connection may hand back) to a record, and the flat
//! (name, value) list a script returns.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionkit_core::{ErrorKind, Record};
use sessionkit_redis::fuzzing::{parse_reply, record_from_hgetall, record_from_pairs};
use sessionkit_redis::redis::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((Ok(reply), _))) = parse_reply(data) else {
        return;
    };
    if let Value::Array(items) = &reply {
        let strings: Vec<Vec<u8>> = items
            .iter()
            .map(|item| match item {
                Value::BulkString(bytes) => bytes.clone(),
                Value::SimpleString(text) => text.clone().into_bytes(),
                _ => Vec::new(),
            })
            .collect();
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = strings
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        check(record_from_pairs(pairs));
        let map = items
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        check(record_from_hgetall(Value::Map(map)));
    }
    check(record_from_hgetall(reply));
});

fn check(decoded: sessionkit_core::Result<Option<Record>>) {
    match decoded {
        Ok(Some(record)) => {
            // The fields the store's scripts write for this record decode to it again.
            let mut fields = vec![
                (
                    b"__c".to_vec(),
                    record.created_at.as_millis().to_string().into_bytes(),
                ),
                (
                    b"__e".to_vec(),
                    record.expires_at.as_millis().to_string().into_bytes(),
                ),
                (b"__v".to_vec(), record.version.to_string().into_bytes()),
            ];
            if let Some(owner) = &record.owner {
                fields.push((b"__o".to_vec(), owner.clone().into_bytes()));
            }
            if let Some(to) = &record.moved_to {
                fields.push((b"__p".to_vec(), to.to_hex().into_bytes()));
            }
            for (name, value) in &record.data {
                fields.push((format!("d:{name}").into_bytes(), value.clone()));
            }
            let again = record_from_pairs(fields)
                .expect("re-decodes")
                .expect("a record");
            assert_eq!(again, record);
        }
        Ok(None) => {}
        Err(err) => assert_eq!(err.kind(), ErrorKind::Codec, "{err}"),
    }
}
