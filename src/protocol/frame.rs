//! Frame boundaries of tagged messages: one tag byte, then a big-endian i32 length that counts
//! itself and the body. The session reads headers from its receive buffer, checks them against
//! the size cap, and forwards whole frames (or streams the body of large ones) without copying
//! them into typed structures.

use thiserror::Error;

/// Bytes of tag + length.
pub const HEADER_LEN: usize = 5;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub tag: u8,
    /// Length of the body (excluding tag and length field).
    pub body_len: usize,
}

impl FrameHeader {
    /// Total bytes on the wire: tag, length field and body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len
    }
}

/// Why a frame header is unacceptable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {length} for message type '{}'", printable(*tag))]
    InvalidLength { tag: u8, length: i32 },
    #[error("message of type '{}' is {size} bytes, over the limit of {limit} bytes", printable(*tag))]
    TooLarge { tag: u8, size: usize, limit: usize },
    #[error("invalid frontend message type {tag} ('{}')", printable(*tag))]
    UnknownTag { tag: u8 },
}

fn printable(tag: u8) -> char {
    if tag.is_ascii_graphic() {
        tag as char
    } else {
        '?'
    }
}

/// Parses the header at the start of `buf`. `Ok(None)` means fewer than 5 bytes are buffered.
/// `max_size` caps the whole frame (tag + length + body).
pub fn parse_header(buf: &[u8], max_size: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let tag = head[0];
    let length = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if length < 4 {
        return Err(FrameError::InvalidLength { tag, length });
    }
    let body_len = length as usize - 4;
    let size = body_len + HEADER_LEN;
    if size > max_size {
        return Err(FrameError::TooLarge {
            tag,
            size,
            limit: max_size,
        });
    }
    Ok(Some(FrameHeader { tag, body_len }))
}

/// Appends the frame `tag` + length + `body` to `out`: the bytes a decoded frame arrived as
/// (its length always counts itself and the body). A body over the protocol's i32 range is
/// never a frame that arrived, so its length saturates.
pub fn write(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    let length = i32::try_from(body.len().saturating_add(4)).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
}

/// Frontend message types a client may send after startup (protocol 3.0 and 3.2).
pub fn is_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'C'
            | b'S'
            | b'H'
            | b'X'
            | b'd'
            | b'c'
            | b'f'
            | b'F'
            | b'p'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_header_is_none() {
        assert_eq!(parse_header(b"Q\0\0", 100), Ok(None));
    }

    #[test]
    fn write_rebuilds_the_frame_parse_header_reads() {
        let mut out = Vec::new();
        write(&mut out, b'P', b"\0SELECT 1\0\0\0");
        let header = parse_header(&out, 1024).unwrap().unwrap();
        assert_eq!((header.tag, header.body_len), (b'P', 12));
        assert_eq!(header.frame_len(), out.len());
    }

    #[test]
    fn header_reports_body_length() {
        let h = parse_header(b"Q\0\0\0\x09SELE", 100).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                tag: b'Q',
                body_len: 5
            }
        );
        assert_eq!(h.frame_len(), 10);
    }

    #[test]
    fn negative_and_short_lengths_are_rejected() {
        assert!(matches!(
            parse_header(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::InvalidLength { .. })
        ));
        assert!(matches!(
            parse_header(b"Q\0\0\0\x03", 100),
            Err(FrameError::InvalidLength { .. })
        ));
    }

    #[test]
    fn oversized_frames_are_rejected() {
        let err = parse_header(b"d\0\0\x10\0", 1000).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                tag: b'd',
                size: 4097,
                limit: 1000
            }
        );
    }

    #[test]
    fn known_tags() {
        assert!(is_frontend_tag(b'Q'));
        assert!(!is_frontend_tag(b'Z'));
        assert!(!is_frontend_tag(0));
    }
}
