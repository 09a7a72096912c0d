//! The two byte buffers of a session leg: [`RecvBuf`] collects bytes read from a socket until
//! whole frames can be inspected; [`SendBuf`] queues bytes until the socket takes them. Both keep
//! their memory between uses, so a steady session allocates nothing per message.

/// Bytes read and not yet consumed: `data[start..end]`. The region after `end` is kept
/// initialised so reads need no unsafe code.
#[derive(Default)]
pub struct RecvBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    pub fn new(capacity: usize) -> Self {
        RecvBuf {
            data: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// Bytes allocated.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// The unconsumed bytes.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes at the front as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room to read more, keeping at least `want` bytes of free space; compacts first and
    /// grows only when a single frame needs it.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.data.len() - self.end < want {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < want {
                self.data.resize(self.end + want, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Records that `n` bytes were read into the slice returned by [`RecvBuf::spare`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Gives back memory a large frame made the buffer grow to, once it is empty again.
    pub fn shrink_to(&mut self, capacity: usize) {
        if self.is_empty() && self.data.len() > capacity {
            self.data.truncate(capacity);
            self.data.shrink_to_fit();
        }
    }
}

/// Bytes waiting to be written: `data[start..]`.
#[derive(Default)]
pub struct SendBuf {
    data: Vec<u8>,
    start: usize,
}

impl SendBuf {
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// The underlying vector, for builders that append whole messages.
    pub fn writer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Marks `n` bytes as written.
    pub fn advance(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Gives back memory once empty, if a burst made it grow past `capacity`.
    pub fn shrink_to(&mut self, capacity: usize) {
        if self.is_empty() && self.data.capacity() > capacity {
            self.data = Vec::with_capacity(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_buffer_compacts_and_grows() {
        let mut b = RecvBuf::new(8);
        b.spare(4)[..6].copy_from_slice(b"abcdef");
        b.commit(6);
        b.consume(4);
        assert_eq!(b.filled(), b"ef");
        let spare = b.spare(10);
        assert!(spare.len() >= 10);
        spare[..3].copy_from_slice(b"ghi");
        b.commit(3);
        assert_eq!(b.filled(), b"efghi");
        b.consume(5);
        assert!(b.is_empty());
        b.shrink_to(4);
        assert_eq!(b.spare(1).len(), 4);
    }

    #[test]
    fn send_buffer_tracks_partial_writes() {
        let mut s = SendBuf::default();
        s.push(b"hello");
        s.advance(2);
        assert_eq!(s.pending(), b"llo");
        s.advance(3);
        assert!(s.is_empty());
        assert_eq!(s.pending(), b"");
    }
}
