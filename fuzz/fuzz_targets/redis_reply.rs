//! The RESP2 reader of the Redis store's connection (`resp::parse`), fed the way the
//! connection's reader task feeds it: bytes arriving in chunks, replies parsed off the front of
//! a buffer. The first input byte sets the chunk size; the rest is what the server sends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionkit_redis::fuzzing::parse_reply;

/// What one parse step gave: a reply (as `Debug` text) and its length, or an error.
#[derive(Debug, PartialEq)]
enum Step {
    Reply(String, usize),
    Error,
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let whole = replies(stream, stream.len().max(1));
    let chunked = replies(stream, usize::from(chunk % 32) + 1);
    assert_eq!(whole, chunked, "replies depend on how the bytes arrived");
});

/// The replies `stream` holds, read as the connection reads them, `chunk` bytes at a time.
fn replies(stream: &[u8], chunk: usize) -> Vec<Step> {
    let mut buf = Vec::new();
    let mut steps = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        let mut used = 0;
        loop {
            match parse_reply(&buf[used..]) {
                Ok(Some((reply, len))) => {
                    assert!(len > 0 && len <= buf.len() - used, "length {len}");
                    let shown = format!("{reply:?}");
                    // A reply is exactly its bytes: no look-ahead past them.
                    let (again, again_len) = parse_reply(&buf[used..used + len])
                        .expect("the same bytes")
                        .expect("a whole reply");
                    assert_eq!((format!("{again:?}"), again_len), (shown.clone(), len));
                    steps.push(Step::Reply(shown, len));
                    used += len;
                }
                Ok(None) => break,
                Err(_) => {
                    steps.push(Step::Error);
                    return steps;
                }
            }
        }
        buf.drain(..used);
    }
    steps
}
