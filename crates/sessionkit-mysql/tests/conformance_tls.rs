//! The conformance suite against MariaDB/MySQL over TLS (`ssl-mode=VERIFY_IDENTITY` with the
//! test CA), as a user that must use TLS. Required under CI=true.

sessionkit_conformance::conformance_suite!(sessionkit_testkit::mysql_tls());
