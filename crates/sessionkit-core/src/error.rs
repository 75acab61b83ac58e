//! One error type for every store and the manager.

use std::fmt;

/// A boxed error from a driver, kept as the [`std::error::Error::source`] of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the sessionkit [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is: what a caller branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store failed (a query error, an I/O error, a protocol error).
    Backend,
    /// The store could not be reached (connection refused, timed out, pool exhausted). Web
    /// integrations answer these with 503.
    Unavailable,
    /// A stored record or value did not decode, or a value did not encode.
    Codec,
    /// A write conflicted: `create` found the id taken, or an optimistic write lost its retries.
    Conflict,
    /// The session is gone (deleted, cycled away or expired) and the operation needs it.
    Gone,
    /// The store cannot do this operation (Memcached cannot list sessions).
    Unsupported,
    /// A value or a session is larger than the configured or the store's limit.
    TooLarge,
    /// A configuration error: a bad store URL, an invalid table name, a reserved key.
    Config,
    /// The request reached its session through the session's *old* id, during the grace
    /// period after [`Session::cycle_id`](crate::Session::cycle_id), and asked for something
    /// only the current id may do (cycle the id, change the owner or the expiry). Web
    /// integrations answer these with 409.
    Superseded,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backend => "store error",
            Self::Unavailable => "store unavailable",
            Self::Codec => "codec error",
            Self::Conflict => "conflict",
            Self::Gone => "session gone",
            Self::Unsupported => "unsupported",
            Self::TooLarge => "too large",
            Self::Config => "configuration error",
            Self::Superseded => "superseded",
        })
    }
}

/// The error of every sessionkit operation.
///
/// Each variant keeps the error that caused it as its [`source`](std::error::Error::source), so a
/// log shows the driver's own message; [`Error::kind`] says what kind of failure it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error("store error: {message}")]
    Backend {
        /// What was being done.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The store could not be reached.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What was being done.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// A value or record did not encode or decode.
    #[error("codec error{}: {message}", key.as_ref().map(|k| format!(" for key {k:?}")).unwrap_or_default())]
    Codec {
        /// The session key (data key) whose value failed, when one value is at fault.
        key: Option<String>,
        /// What failed.
        message: String,
        /// The codec's error.
        #[source]
        source: Option<BoxError>,
    },
    /// A write conflicted.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicted.
        message: String,
    },
    /// The session is gone.
    #[error("session gone")]
    Gone,
    /// The store cannot do this.
    #[error("{store} store does not support {operation}")]
    Unsupported {
        /// The store's name (`"memcached"`).
        store: &'static str,
        /// The operation (`"list"`).
        operation: &'static str,
    },
    /// Something is larger than allowed.
    #[error("{what} is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// What was too large (`"value \"cart\""`, `"session"`).
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The request presented the session's old id (grace period after a `cycle_id()`), and
    /// `operation` needs the current one.
    #[error(
        "session reached through its old id during the grace period after cycle_id(): {operation} needs the current id"
    )]
    Superseded {
        /// What was refused (`"cycle_id"`, `"set_owner"`, `"set_expiry"`).
        operation: &'static str,
    },
    /// A configuration error.
    #[error("configuration error: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The underlying error, e.g. a URL parse error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Backend { .. } => ErrorKind::Backend,
            Self::Unavailable { .. } => ErrorKind::Unavailable,
            Self::Codec { .. } => ErrorKind::Codec,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::Gone => ErrorKind::Gone,
            Self::Unsupported { .. } => ErrorKind::Unsupported,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Config { .. } => ErrorKind::Config,
            Self::Superseded { .. } => ErrorKind::Superseded,
        }
    }

    /// A store failure caused by `source`.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An unreachable store, caused by `source`.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A stored record that does not decode (no single key at fault, no underlying error).
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::Codec {
            key: None,
            message: message.into(),
            source: None,
        }
    }

    /// A codec failure for one data key.
    pub fn codec(
        key: Option<&str>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Codec {
            key: key.map(str::to_owned),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A write conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
        }
    }

    /// A configuration error with no underlying error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
            source: None,
        }
    }

    /// A configuration error caused by `source`.
    pub fn config_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Config {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Whether the store could not be reached (answer with 503 and retry later).
    pub fn is_unavailable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn errors_keep_their_source_and_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::unavailable("connecting to redis", io);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_unavailable());
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("refused")
        );
        assert_eq!(err.to_string(), "store unavailable: connecting to redis");
    }

    #[test]
    fn codec_errors_name_their_key() {
        let err = Error::codec(Some("cart"), "decode", std::fmt::Error);
        assert_eq!(err.kind(), ErrorKind::Codec);
        assert!(err.to_string().contains("\"cart\""), "{err}");
    }
}
