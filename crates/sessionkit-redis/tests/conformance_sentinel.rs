//! The conformance suite against the master behind the test Redis Sentinels
//! (`redis+sentinel://`, a password on the master). Required under CI=true.

sessionkit_conformance::conformance_suite!(sessionkit_testkit::redis_sentinel());
