//! The conformance suite against the memory store.

use sessionkit_memory::MemoryStore;

sessionkit_conformance::conformance_suite!(async { Some(MemoryStore::new()) });
