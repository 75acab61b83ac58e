//! The conformance suite against the TLS-only test Redis (`rediss://` verified with the test
//! CA), as an ACL user with a password. Required under CI=true.

sessionkit_conformance::conformance_suite!(sessionkit_testkit::redis_tls());
