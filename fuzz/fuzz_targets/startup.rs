//! The untagged first packet of a connection: length prefix checked with
//! `startup::body_len`, body decoded with `startup::decode`. A decoded StartupMessage or
//! CancelRequest must encode back to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgward::protocol::startup::{self, StartupPacket};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = startup::body_len(*prefix) else {
        return;
    };
    assert!((4..startup::MAX_STARTUP_PACKET).contains(&len));
    let Some(body) = rest.get(..len) else {
        return; // the session waits for the rest
    };
    match startup::decode(body) {
        Ok(StartupPacket::Startup(msg)) => {
            assert!(!msg.user().is_empty());
            let _ = msg.database();
            assert_eq!(msg.encode(), data[..4 + len]);
        }
        Ok(StartupPacket::Cancel(key)) => {
            assert!((1..=256).contains(&key.secret.len()));
            assert_eq!(startup::encode_cancel(&key), data[..4 + len]);
        }
        Ok(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => assert!(len >= 4),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
