//! Benchmarks of the core's hot paths: id generation and hashing, value encoding, and a request's
//! session work over the memory store.
//!
//! Run: `cargo bench -p sessionkit-core --bench core` (results: docs/BENCHMARKS.md).

#![allow(missing_docs)]

use std::time::Duration;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use sessionkit_core::codec::{decode_value, encode_value};
use sessionkit_core::{CleanupPolicy, CookieUpdate, Record, SessionId, SessionManager, Timestamp};
use sessionkit_memory::MemoryStore;
use sha2::Digest;

/// A typical logged-in session's values.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
struct Profile {
    user_id: u64,
    name: String,
    email: String,
    roles: Vec<String>,
    locale: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
struct CartItem {
    sku: String,
    quantity: u32,
    price_cents: u64,
}

fn profile() -> Profile {
    Profile {
        user_id: 1_234_567,
        name: "Alice Example".into(),
        email: "alice@example.com".into(),
        roles: vec!["customer".into(), "beta".into()],
        locale: "en-GB".into(),
    }
}

fn cart() -> Vec<CartItem> {
    (0..5)
        .map(|i| CartItem {
            sku: format!("SKU-{i:05}"),
            quantity: i + 1,
            price_cents: 199 * u64::from(i + 1),
        })
        .collect()
}

fn ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("id");
    group.bench_function("generate", |b| {
        b.iter(|| SessionId::generate().expect("rng"))
    });
    let id = SessionId::generate().expect("rng");
    let raw = [7u8; 24];
    group.bench_function("hash/sha256 (chosen)", |b| {
        b.iter(|| sha2::Sha256::digest(black_box(raw)))
    });
    group.bench_function("hash/blake3", |b| b.iter(|| blake3::hash(black_box(&raw))));
    group.bench_function("generate+key", |b| {
        b.iter(|| SessionId::generate().expect("rng").key())
    });
    let cookie = id.expose();
    group.bench_function("parse+key", |b| {
        b.iter(|| SessionId::parse(black_box(&cookie)).expect("valid").key())
    });
    group.bench_function("parse malformed", |b| {
        let bad = "x".repeat(4096);
        b.iter(|| SessionId::parse(black_box(&bad)).is_err())
    });
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let (profile, cart) = (profile(), cart());

    let mp = (
        rmp_serde::to_vec_named(&profile).expect("mp"),
        rmp_serde::to_vec_named(&cart).expect("mp"),
    );
    let js = (
        serde_json::to_vec(&profile).expect("json"),
        serde_json::to_vec(&cart).expect("json"),
    );
    let mut cb = (Vec::new(), Vec::new());
    ciborium::into_writer(&profile, &mut cb.0).expect("cbor");
    ciborium::into_writer(&cart, &mut cb.1).expect("cbor");
    println!(
        "typical session bytes (profile + cart): msgpack {} json {} cbor {}",
        mp.0.len() + mp.1.len(),
        js.0.len() + js.1.len(),
        cb.0.len() + cb.1.len()
    );

    group.bench_function("encode/msgpack (chosen)", |b| {
        b.iter(|| {
            (
                encode_value("profile", black_box(&profile)).expect("e"),
                encode_value("cart", black_box(&cart)).expect("e"),
            )
        })
    });
    group.bench_function("encode/json", |b| {
        b.iter(|| {
            (
                serde_json::to_vec(black_box(&profile)).expect("e"),
                serde_json::to_vec(black_box(&cart)).expect("e"),
            )
        })
    });
    group.bench_function("encode/cbor", |b| {
        b.iter(|| {
            let (mut p, mut c) = (Vec::new(), Vec::new());
            ciborium::into_writer(black_box(&profile), &mut p).expect("e");
            ciborium::into_writer(black_box(&cart), &mut c).expect("e");
            (p, c)
        })
    });
    group.bench_function("decode/msgpack (chosen)", |b| {
        b.iter(|| {
            let p: Profile = decode_value("profile", black_box(&mp.0)).expect("d");
            let c: Vec<CartItem> = decode_value("cart", black_box(&mp.1)).expect("d");
            (p, c)
        })
    });
    group.bench_function("decode/json", |b| {
        b.iter(|| {
            let p: Profile = serde_json::from_slice(black_box(&js.0)).expect("d");
            let c: Vec<CartItem> = serde_json::from_slice(black_box(&js.1)).expect("d");
            (p, c)
        })
    });
    group.bench_function("decode/cbor", |b| {
        b.iter(|| {
            let p: Profile = ciborium::from_reader(black_box(&cb.0[..])).expect("d");
            let c: Vec<CartItem> = ciborium::from_reader(black_box(&cb.1[..])).expect("d");
            (p, c)
        })
    });

    let mut record = Record::new(Timestamp::now(), Timestamp::now());
    record.data.insert("profile".into(), mp.0.clone());
    record.data.insert("cart".into(), mp.1.clone());
    record.data.insert(
        "csrf".into(),
        encode_value("csrf", "0123456789abcdef0123456789abcdef").expect("e"),
    );
    let blob = record.to_blob().expect("blob");
    group.bench_function("record blob/encode", |b| {
        b.iter(|| black_box(&record).to_blob().expect("e"))
    });
    group.bench_function("record blob/decode", |b| {
        b.iter(|| Record::from_blob(black_box(&blob)).expect("d"))
    });
    group.finish();
}

fn requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let manager = SessionManager::builder(MemoryStore::new())
        .cleanup(CleanupPolicy::Off)
        .build()
        .expect("manager");
    let cookie = runtime.block_on(async {
        let session = manager.session(None);
        session.insert("profile", &profile()).await.expect("insert");
        session.insert("counter", &0u64).await.expect("insert");
        match session.commit().await.expect("commit").cookie {
            CookieUpdate::Set { id, .. } => id.expose(),
            _ => unreachable!("new session"),
        }
    });
    let mut group = c.benchmark_group("request/memory");
    group.bench_function("untouched", |b| {
        b.to_async(&runtime).iter(|| async {
            manager
                .session(Some(&cookie))
                .commit()
                .await
                .expect("commit")
        })
    });
    group.bench_function("read", |b| {
        b.to_async(&runtime).iter(|| async {
            let session = manager.session(Some(&cookie));
            let n: Option<u64> = session.get("counter").await.expect("get");
            let _ = session.commit().await.expect("commit");
            n
        })
    });
    group.bench_function("incr", |b| {
        b.to_async(&runtime).iter(|| async {
            let session = manager.session(Some(&cookie));
            session
                .update("counter", |n: &mut u64| *n += 1)
                .await
                .expect("update");
            session.commit().await.expect("commit")
        })
    });
    let manager = &manager;
    group.bench_function("create", |b| {
        b.to_async(&runtime).iter_batched(
            profile,
            |p| async move {
                let session = manager.session(None);
                session.insert("profile", &p).await.expect("insert");
                session.commit().await.expect("commit")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = ids, codecs, requests
}
criterion_main!(benches);
