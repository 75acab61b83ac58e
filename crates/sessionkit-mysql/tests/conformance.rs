//! The conformance suite against MariaDB/MySQL, each test on its own table. Required under
//! CI=true; skipped loudly elsewhere when the server is down.

sessionkit_conformance::conformance_suite!(sessionkit_testkit::mysql());
