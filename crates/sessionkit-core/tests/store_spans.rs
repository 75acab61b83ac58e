//! Every store call the manager makes runs in a `sessionkit.store` span with the store, the
//! operation, the short key hash and the outcome, and no span field holds an id or a whole
//! key hash. Its own test binary: a span callsite's interest is cached process-wide, and a
//! test running without a subscriber on another thread could leave it switched off.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use sessionkit_core::{CleanupPolicy, CookieUpdate, SessionId, SessionManager};
use sessionkit_memory::MemoryStore;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// One span as a subscriber saw it: its name, target and fields (as text).
#[derive(Debug, Clone)]
struct SeenSpan {
    id: u64,
    name: &'static str,
    target: String,
    fields: BTreeMap<String, String>,
}

/// Collects every span and the fields recorded on it later, in the order they were opened
/// (the registry reuses the ids of closed spans).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SeenSpan>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let span = SeenSpan {
            id: 0,
            name: attrs.metadata().name(),
            target: attrs.metadata().target().to_owned(),
            fields,
        };
        if let Ok(mut spans) = self.0.lock() {
            spans.push(SeenSpan {
                id: id.into_u64(),
                ..span
            });
        }
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, _: Context<'_, S>) {
        if let Ok(mut spans) = self.0.lock()
            && let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64())
        {
            values.record(&mut Fields(&mut span.fields));
        }
    }
}

#[tokio::test]
async fn every_store_call_runs_in_a_span() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _tracing = tracing::subscriber::set_default(subscriber);

    let manager = SessionManager::builder(MemoryStore::new())
        .cleanup(CleanupPolicy::Off)
        .build()
        .expect("manager");
    let session = manager.session(None);
    session.insert("n", &1u32).await.expect("insert");
    let CookieUpdate::Set { id, .. } = session.commit().await.expect("commit").cookie else {
        panic!("a new session gets a cookie")
    };
    let session = manager.session(Some(&id.expose()));
    session.insert("n", &2u32).await.expect("insert");
    let _ = session.commit().await.expect("commit");
    let missing = SessionId::generate().expect("rng");
    let session = manager.session(Some(&missing.expose()));
    assert_eq!(session.get::<u32>("n").await.expect("get"), None);
    assert_eq!(manager.purge_expired().await.expect("purge"), 0);

    let seen: Vec<SeenSpan> = spans
        .0
        .lock()
        .expect("spans")
        .iter()
        .filter(|span| span.name == "sessionkit.store")
        .cloned()
        .collect();
    let field = |span: &SeenSpan, name: &str| span.fields.get(name).cloned().unwrap_or_default();
    let calls: BTreeSet<(String, String, String)> = seen
        .iter()
        .map(|span| {
            (
                field(span, "operation"),
                field(span, "key"),
                field(span, "outcome"),
            )
        })
        .collect();
    let short = id.key().short();
    let expected: BTreeSet<(String, String, String)> = [
        ("create", short.as_str(), "ok"),
        ("load", short.as_str(), "found"),
        ("apply", short.as_str(), "applied"),
        ("load", missing.key().short().as_str(), "missing"),
        ("delete_expired", "", "ok"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(calls, expected);
    for span in &seen {
        assert_eq!(span.target, sessionkit_core::metrics::SPAN_TARGET);
        assert_eq!(field(span, "store"), "memory");
        for secret in [&id, &missing].map(|id| [id.expose(), id.key().to_hex()]) {
            assert!(
                span.fields
                    .values()
                    .all(|v| secret.iter().all(|s| !v.contains(s))),
                "a span holds an id or a whole key: {span:?}"
            );
        }
    }
}
