//! The conformance suite against PostgreSQL, each test on its own table. Required under
//! CI=true; skipped loudly elsewhere when the server is down.

sessionkit_conformance::conformance_suite!(sessionkit_testkit::postgres());
