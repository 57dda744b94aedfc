//! One file per connector. Everything here that blocks runs on the client's
//! own threads, helper threads or the main thread, never a timely worker.

pub mod bounded_read;
pub mod datagen;
pub mod durable;
pub mod file_sink;
pub mod https;
pub mod kafka_admin;
pub mod kafka_config;
pub mod kafka_sink;
pub mod kafka_source;
pub mod memory;
pub mod postgres_epochs;
pub mod postgres_sink;
pub mod postgres_tls;
pub mod registry_server;
pub mod sink;
pub mod stdout_sink;
pub mod written_by;

use crate::record::RawRecord;

/// What a poll of a source found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Records were appended.
    Data,
    /// Nothing now; poll again later.
    Idle,
    /// A bounded source has read everything it will ever read.
    Done,
}

/// A source as one worker sees it. `poll` must never block.
pub trait SourceReader {
    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Poll;

    /// For sources that cut their own epochs (scripted test input): the
    /// epoch of the records this poll returned. None: the runtime cuts
    /// epochs by time and `poll` is used instead.
    fn poll_scripted(&mut self, _out: &mut Vec<RawRecord>, _max: usize) -> Option<(u64, Poll)> {
        None
    }

    fn epoch(&self) -> Option<u64> {
        None
    }

    /// True while the source is cutting logged epochs again after a restart;
    /// the clock must not move its epoch meanwhile.
    fn replaying(&self) -> bool {
        false
    }

    /// The source's epoch moves on from `from` to `to`: for each epoch in
    /// between that ends, the partitions that still had records waiting
    /// past what was read in it (a window must not take them for idle).
    /// Live, that is `from` as the reader finds it now; replaying, what
    /// the epoch log says of each replayed epoch.
    fn waiting(&mut self, _from: u64, _to: u64) -> Vec<(u64, Vec<i32>)> {
        Vec::new()
    }

    /// Asks the reader to call `wake` whenever records arrive after a poll
    /// found none, from whatever thread receives them; false if it cannot,
    /// and must then be polled on a timer.
    fn wake_on_data(&mut self, _wake: Box<dyn Fn() + Send + Sync>) -> bool {
        false
    }
}

/// Kafka's default partitioner for keyed records (murmur2, as the Java
/// client computes it), so keys land where Kafka Streams would put them.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// A client taken down on a thread of its own when dropped: closing a
/// librdkafka client waits for its threads, up to 100 ms, which a timely
/// worker (a source's reader is dropped on one when the source is done)
/// must not.
pub struct DropAside<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropAside<T> {
    pub fn new(t: T) -> Self {
        DropAside(Some(t))
    }
}

impl<T: Send + 'static> std::ops::Deref for DropAside<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> std::ops::DerefMut for DropAside<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for DropAside<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            std::thread::spawn(move || drop(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's own UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 4] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
