//! Client bytes after startup: split into frames with `frame::parse_header`, exactly as the
//! session does, and every frame pgward inspects decoded into its typed view. Checks that no
//! header claims more than it holds and that every view borrows from inside its frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::protocol::frame::{self, FrameError};
use pgward::protocol::frontend;
use pgward::protocol::tag::frontend as tag;

/// Small enough that libFuzzer reaches the "too large" error with its default input sizes.
const MAX_FRAME: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let header = match frame::parse_header(rest, MAX_FRAME) {
            Ok(Some(h)) => h,
            Ok(None) => {
                assert!(rest.len() < frame::HEADER_LEN);
                break;
            }
            Err(FrameError::TooLarge { size, limit, .. }) => {
                assert!(size > limit);
                break;
            }
            Err(_) => break,
        };
        assert_eq!(header.frame_len(), header.body_len + frame::HEADER_LEN);
        assert!(header.frame_len() <= MAX_FRAME);
        let Some(body) = rest.get(frame::HEADER_LEN..header.frame_len()) else {
            break; // the rest of the frame has not arrived
        };
        if frame::is_frontend_tag(header.tag) {
            inspect(header.tag, body);
        }
        rest = &rest[header.frame_len()..];
    }
});

fn inspect(t: u8, body: &[u8]) {
    match t {
        tag::QUERY => {
            if let Some(sql) = frontend::query(body) {
                assert_eq!(sql.len() + 1, body.len());
                assert!(!sql.contains(&0));
            }
        }
        tag::PARSE => {
            if let Some(p) = frontend::parse(body) {
                let count = usize::from(p.param_type_count);
                assert_eq!(p.param_types.len(), count * 4);
                assert!(p.statement.len() + p.sql.len() + 4 + p.param_types.len() <= body.len());
                for i in 0..count {
                    let oid = p.param_type(i);
                    let bytes = &p.param_types[i * 4..i * 4 + 4];
                    assert_eq!(oid.to_be_bytes(), bytes);
                }
                // Past the declared types, and at indexes whose offset would overflow.
                assert_eq!(p.param_type(count), 0);
                assert_eq!(p.param_type(usize::MAX / 4 + 1), 0);
                assert_eq!(p.param_type(usize::MAX), 0);
            }
        }
        tag::BIND => {
            if let Some(b) = frontend::bind(body) {
                assert_eq!(
                    b.portal.len() + b.statement.len() + 2 + b.rest.len(),
                    body.len()
                );
            }
        }
        tag::EXECUTE => {
            if let Some(e) = frontend::execute(body) {
                assert_eq!(e.portal.len() + 5, body.len());
            }
        }
        tag::DESCRIBE | tag::CLOSE => {
            if let Some(target) = frontend::describe_or_close(body) {
                let (frontend::Target::Statement(name) | frontend::Target::Portal(name)) = target;
                assert_eq!(name.len() + 2, body.len());
            }
        }
        _ => {}
    }
}
