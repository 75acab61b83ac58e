//! The conformance suite against the TLS-only test Redis (`rediss://` verified with the test
//! CA), as an ACL user with a password, and against the TLS-only Redis Cluster. Required under
//! CI=true.

mod standalone {
    sessionkit_conformance::conformance_suite!(sessionkit_testkit::redis_tls());
}

/// The TLS-only Redis Cluster (`rediss+cluster://`, every node's certificate verified).
mod cluster {
    sessionkit_conformance::conformance_suite!(sessionkit_testkit::redis_cluster_tls());
}
