//! The PostgreSQL v3 wire format, sans IO: frame boundaries, the untagged startup packets, the
//! few message bodies pgward must read, and builders for the messages pgward synthesises.
//!
//! Nothing here touches a socket or imports the rest of the crate. Forwarded traffic is never
//! re-encoded: callers find frame boundaries with [`frame`], copy the original bytes onward, and
//! decode only the frames they must inspect (see `docs/adr/0001-own-wire-codec.md` for why this is
//! our own code rather than pgwire's codec).

pub mod backend;
pub mod build;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;
pub mod tag;

pub use frame::{FrameError, FrameHeader};

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest after the NUL.
pub(crate) fn take_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

pub(crate) fn take_u16(buf: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = buf.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*head), rest))
}

/// The most parameters one statement may have: PostgreSQL counts them in an unsigned 16-bit
/// field and refuses `$k` with k above this.
pub const MAX_PARAMETERS: usize = 65_535;

pub(crate) fn take_i32(buf: &[u8]) -> Option<(i32, &[u8])> {
    let (head, rest) = buf.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*head), rest))
}
