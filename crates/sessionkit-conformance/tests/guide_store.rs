//! The store the "Implementing a Store" guide (`sessionkit_core::backend`) builds passes the
//! whole conformance suite: the guide's code is this file's code.

include!("../../sessionkit-core/src/backend/guide_store.rs");

sessionkit_conformance::conformance_suite!(async { Some(MapStore::default()) });

#[tokio::test]
async fn the_registry_opens_it_by_its_scheme() {
    let mut registry = Registry::new();
    register(&mut registry);
    let store = registry.open("map:").await.expect("map: opens");
    assert_eq!(store.name(), "map");
    let err = registry
        .open("map:x?y=1")
        .await
        .err()
        .expect("options are refused");
    assert_eq!(err.kind(), sessionkit_core::ErrorKind::Config);
}
