//! The conformance suite against PostgreSQL over TLS (`sslmode=verify-full` with the test CA),
//! as a user that may log in only over TLS with a SCRAM password. Required under CI=true.

sessionkit_conformance::conformance_suite!(sessionkit_testkit::postgres_tls());
