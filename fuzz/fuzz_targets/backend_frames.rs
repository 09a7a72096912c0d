//! Server bytes: split into frames with `frame::parse_header` and every message pgward reads
//! from the server decoded as the relay and the pipeline decode it. Checks that each decoded
//! field lies inside its frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::protocol::backend;
use pgward::protocol::frame;
use pgward::protocol::tag::backend as tag;

const MAX_FRAME: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(header)) = frame::parse_header(rest, MAX_FRAME) {
        let Some(body) = rest.get(frame::HEADER_LEN..header.frame_len()) else {
            break;
        };
        inspect(header.tag, body);
        rest = &rest[header.frame_len()..];
    }
});

fn inspect(t: u8, body: &[u8]) {
    match t {
        tag::AUTHENTICATION if backend::auth_code(body) == Some(backend::auth::SASL) => {
            let names = backend::sasl_mechanisms(body);
            let total: usize = names.iter().map(|n| n.len() + 1).sum();
            assert!(total + 4 <= body.len());
            assert!(names.iter().all(|n| !n.is_empty() && !n.contains(&0)));
        }
        tag::BACKEND_KEY_DATA => {
            if let Some((_, secret)) = backend::backend_key(body) {
                assert_eq!(secret.len() + 4, body.len());
            }
        }
        tag::PARAMETER_STATUS => {
            if let Some((name, value)) = backend::parameter_status(body) {
                assert!(name.len() + value.len() + 2 <= body.len());
            }
        }
        // Only a one-byte body has a status. Not every one-byte body does: a byte other than
        // I, T or E (which PostgreSQL never sends) is None, and the session keeps the status
        // it last knew (pipeline::expect). The first version of this target asserted "one
        // byte => Some", which the fuzzer disproved with `Z 00000005 05`.
        tag::READY_FOR_QUERY if backend::ready_status(body).is_some() => {
            assert_eq!(body.len(), 1);
        }
        tag::COMMAND_COMPLETE => {
            let rows = backend::command_rows(body);
            if body.len() < 3 {
                assert_eq!(rows, 0);
            }
        }
        tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
            let fields = backend::error_fields(body);
            assert!(fields.severity == b"ERROR" || fields.severity.len() < body.len());
            let _ = fields.is_fatal();
        }
        _ => {}
    }
}
