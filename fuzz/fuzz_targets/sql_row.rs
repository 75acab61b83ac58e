//! The SQL stores' row decoding (`sessionkit_core::backend::sql`): the inline document of a
//! session row (JSON object of base64 values), the row's other columns, joined value rows and
//! the condition check's witness. The input is the `data` column's text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionkit_core::backend::sql::{
    ListedRow, SessionColumns, encode_inline, fold_joined, inline_doc, inline_witness,
    listed_sessions, read_inline,
};
use sessionkit_core::{Change, Data, ErrorKind};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = std::str::from_utf8(data) else {
        return;
    };
    let mut values = Data::new();
    match read_inline(doc, &mut values) {
        Ok(()) => {
            // One spelling per value: each entry's text is the encoding of what it decoded to
            // (PostgreSQL compares inline values as texts).
            let texts: std::collections::BTreeMap<String, String> =
                serde_json::from_str(doc).expect("read_inline parsed it");
            for (name, text) in &texts {
                assert_eq!(&encode_inline(&values[name]), text, "{name:?}");
            }
            // The document written for these values reads back as them.
            let written = inline_doc(values.iter(), std::iter::empty());
            let mut again = Data::new();
            read_inline(&written, &mut again).expect("a written document reads");
            assert!(again.iter().all(|(k, v)| values.get(k) == Some(v)));
        }
        Err(err) => assert_eq!(err.kind(), ErrorKind::Codec, "{err}"),
    }

    // The witness of a change expecting the names the document has, and some it may not.
    let mut change = Change::default();
    for name in values
        .keys()
        .take(8)
        .map(String::as_str)
        .chain(["a", "cart", ""])
    {
        change.expect(name, None);
    }
    if let Ok((current, elsewhere)) = inline_witness(&change, doc) {
        assert!(current.keys().all(|k| change.expected.contains_key(k)));
        assert!(elsewhere.iter().all(|k| !current.contains_key(*k)));
    }

    // The row's other columns, taken from the first value's bytes.
    let first = values.values().next().cloned().unwrap_or_default();
    let number = |at: usize| {
        let mut raw = [0u8; 8];
        for (i, b) in first.iter().skip(at).take(8).enumerate() {
            raw[i] = *b;
        }
        i64::from_le_bytes(raw)
    };
    let columns = SessionColumns {
        created_at: number(0),
        expires_at: number(8),
        owner: values.keys().next().cloned(),
        version: number(16),
        moved_to: (!first.is_empty()).then(|| first.clone()),
        data: Some(doc.to_owned()),
    };
    let joined = values
        .iter()
        .map(|(k, v)| Ok((Some(k.clone()), (!v.is_empty()).then(|| v.clone()))));
    let only: Vec<&str> = values.keys().map(String::as_str).take(2).collect();
    let _ = fold_joined(columns.clone(), joined, Some(&only));
    let _ = columns.clone().into_record();
    let _ = listed_sessions([ListedRow {
        key: Some(first.clone()),
        session: columns,
        spilled: first.len() % 2 == 0,
    }]);
});
