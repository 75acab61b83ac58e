//! The contract of [`Store::load_bounded`]: the first read of every request.

use std::sync::Arc;

use sessionkit_core::{ApplyOutcome, Change, Record, Store};

use crate::{PAST_SHORT, SHORT, create, fresh_key, keys_of, now, record_with};

/// The size bound the suite asks with (the manager's default).
const BOUND: usize = sessionkit_core::PARTIAL_LOAD_ABOVE;

/// A session far below the bound comes whole (one read for the common case); one far above it
/// comes as its metadata and the asked keys only, on stores with per-key reads (others may
/// always answer whole); missing and expired sessions are `None`; a grace-period pointer comes
/// as it is.
pub async fn load_bounded_is_whole_when_small_and_per_key_when_large<S: Store>(store: Arc<S>) {
    let small = Record {
        owner: Some("hana".into()),
        ..record_with(&[("a", b"1"), ("b", b"22")])
    };
    let small_key = create(&*store, &small).await;
    let (loaded, whole) = store
        .load_bounded(&small_key, &["a"], BOUND)
        .await
        .expect("load_bounded")
        .expect("live");
    assert!(whole, "a small session comes whole, in the first read");
    assert_eq!(keys_of(&loaded), ["a", "b"]);
    assert_eq!(loaded.owner.as_deref(), Some("hana"));

    let big = vec![9u8; 4 * BOUND];
    let large = record_with(&[("small", b"s"), ("big", &big), ("other", b"o")]);
    let large_key = create(&*store, &large).await;
    let (loaded, whole) = store
        .load_bounded(&large_key, &["small", "absent"], BOUND)
        .await
        .expect("load_bounded")
        .expect("live");
    if store.capabilities().per_key_reads {
        assert!(
            !whole,
            "a store with per-key reads does not send a large session whole"
        );
        assert!(
            !loaded.data.contains_key("big"),
            "nor the large value nobody asked for"
        );
    }
    if whole {
        assert_eq!(keys_of(&loaded), ["big", "other", "small"]);
    }
    assert_eq!(loaded.data["small"], b"s");
    assert_eq!(
        (
            loaded.created_at,
            loaded.expires_at,
            loaded.version,
            loaded.moved_to
        ),
        (large.created_at, large.expires_at, large.version, None)
    );

    assert!(
        store
            .load_bounded(&fresh_key(), &["a"], BOUND)
            .await
            .expect("load_bounded")
            .is_none(),
        "a missing session is None"
    );
    let short = Record::new(now(), now().saturating_add(SHORT));
    let short_key = create(&*store, &short).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert!(
        store
            .load_bounded(&short_key, &[], BOUND)
            .await
            .expect("load_bounded")
            .is_none(),
        "an expired session is None"
    );

    let target = fresh_key();
    let grace = Some(now().saturating_add(crate::HOUR));
    let _ = store
        .cycle(&small_key, &target, grace)
        .await
        .expect("cycle");
    let (pointer, _) = store
        .load_bounded(&small_key, &["a"], BOUND)
        .await
        .expect("load_bounded")
        .expect("the pointer");
    assert_eq!(pointer.moved_to, Some(target));
    let mut change = Change::default();
    change.set("a".into(), b"3".to_vec());
    assert!(matches!(
        store.apply(&target, &change).await.expect("apply"),
        ApplyOutcome::Applied { .. }
    ));
    let (moved, whole) = store
        .load_bounded(&target, &["a"], BOUND)
        .await
        .expect("load_bounded")
        .expect("the moved session");
    assert!(whole);
    assert_eq!(moved.data["a"], b"3");
}
