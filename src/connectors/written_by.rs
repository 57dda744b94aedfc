//! Records another rill job wrote carry which copy of its output they are
//! (`rill-writer`, `rill-epoch`, `rill-attempt`). A broker whose
//! `read_committed` shows aborted records (Tansu does) shows the copies of
//! attempts that never committed too; a source reading such a topic asks
//! which copy counts before it hands a record on, so a chain of jobs is
//! exactly once end to end. The answers come from the writing job's epoch
//! log and progress (the runtime reads them); a record of an epoch its job
//! has not decided yet waits, with the records after it in its partition,
//! as Kafka's `read_committed` holds a consumer at an open transaction.

use rdkafka::message::{Headers, Message};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Which copy of another job's output a record is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WrittenBy {
    /// The job that wrote it: its writer's name without `-w<process>`.
    pub job: Arc<str>,
    pub writer: u32,
    pub epoch: u64,
    pub attempt: u32,
}

/// [`WrittenBy`] as a message's headers say it, without copying them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOf<'a> {
    pub job: &'a str,
    pub writer: u32,
    pub epoch: u64,
    pub attempt: u32,
}

impl CopyOf<'_> {
    pub fn is(&self, w: &WrittenBy) -> bool {
        self.epoch == w.epoch
            && self.attempt == w.attempt
            && self.writer == w.writer
            && self.job == &*w.job
    }

    pub fn owned(&self) -> WrittenBy {
        WrittenBy {
            job: Arc::from(self.job),
            writer: self.writer,
            epoch: self.epoch,
            attempt: self.attempt,
        }
    }
}

impl WrittenBy {
    /// The copy a message's headers name, if a rill job wrote it,
    /// borrowing from the message.
    pub fn read<'a, M: Message>(m: &'a M) -> Option<CopyOf<'a>>
    where
        M::Headers: 'a,
    {
        let headers = m.headers()?;
        let (mut writer, mut epoch, mut attempt) = (None, None, None);
        for h in headers.iter() {
            let value = || std::str::from_utf8(h.value?).ok();
            match h.key {
                "rill-writer" => writer = value(),
                "rill-epoch" => epoch = value().and_then(|v| v.parse().ok()),
                "rill-attempt" => attempt = value().and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        let (job, index) = writer?.rsplit_once("-w")?;
        Some(CopyOf {
            job,
            writer: index.parse().ok()?,
            epoch: epoch?,
            attempt: attempt?,
        })
    }
}

/// Says whether a copy counts: Some(true) when its attempt committed the
/// epoch, Some(false) when another attempt's copy did, None while the
/// writing job has not committed the epoch (the caller asks again later).
pub trait Upstream: Send + Sync {
    fn counts(&self, copy: &WrittenBy) -> Option<bool>;
}

/// A record read, with the copy it is when another job wrote it.
pub struct Read<R> {
    pub record: R,
    pub copy: Option<WrittenBy>,
}

/// Records held per partition until their writing job decides their
/// epoch, in the order they were read.
pub struct Held<R> {
    queues: HashMap<i32, VecDeque<Read<R>>>,
    /// Records held, in every partition.
    count: usize,
}

impl<R> Default for Held<R> {
    fn default() -> Self {
        Held {
            queues: HashMap::new(),
            count: 0,
        }
    }
}

impl<R> Held<R> {
    /// Whether `read` must wait: its epoch is undecided, or records before
    /// it in its partition wait.
    pub fn must_wait(&self, partition: i32, read: &Read<R>, upstream: &dyn Upstream) -> bool {
        self.queues.get(&partition).is_some_and(|q| !q.is_empty())
            || read
                .copy
                .as_ref()
                .is_some_and(|c| upstream.counts(c).is_none())
    }

    /// Whether records of `partition` are held.
    pub fn holds(&self, partition: i32) -> bool {
        self.queues.get(&partition).is_some_and(|q| !q.is_empty())
    }

    pub fn hold(&mut self, partition: i32, read: Read<R>) {
        self.count += 1;
        self.queues.entry(partition).or_default().push_back(read);
    }

    /// The first held record of a partition whose epoch is now decided.
    pub fn release(&mut self, upstream: &dyn Upstream) -> Option<Read<R>> {
        let partition = *self.queues.iter().find_map(|(p, q)| {
            let front = q.front()?;
            let decided = front
                .copy
                .as_ref()
                .is_none_or(|c| upstream.counts(c).is_some());
            decided.then_some(p)
        })?;
        let queue = self.queues.get_mut(&partition)?;
        let read = queue.pop_front()?;
        self.count -= 1;
        if queue.is_empty() {
            self.queues.remove(&partition);
        }
        Some(read)
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Records held, in every partition.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The oldest undecided copy held, to say what a run waits for.
    pub fn waiting_for(&self) -> Option<&WrittenBy> {
        self.queues.values().find_map(|q| q.front()?.copy.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Decided epochs: (epoch, attempt that committed it).
    struct Decided(Mutex<HashMap<u64, u32>>);
    impl Upstream for Decided {
        fn counts(&self, c: &WrittenBy) -> Option<bool> {
            self.0
                .lock()
                .unwrap()
                .get(&c.epoch)
                .map(|a| *a == c.attempt)
        }
    }

    fn copy(epoch: u64, attempt: u32) -> Option<WrittenBy> {
        Some(WrittenBy {
            job: "up".into(),
            writer: 0,
            epoch,
            attempt,
        })
    }

    #[test]
    fn a_record_waits_for_its_epoch_and_those_after_it_in_its_partition_wait_behind_it() {
        let up = Decided(Mutex::new(HashMap::from([(1, 1)])));
        let mut held: Held<&str> = Held::default();
        let read = |record, copy| Read { record, copy };
        // Epoch 1 is decided: its copies pass straight on.
        assert!(!held.must_wait(0, &read("a", copy(1, 1)), &up));
        // Epoch 2 is not: its record waits, and so does a plain record
        // after it in the same partition; another partition goes on.
        let undecided = read("b", copy(2, 1));
        assert!(held.must_wait(0, &undecided, &up));
        held.hold(0, undecided);
        let plain = read("c", None);
        assert!(held.must_wait(0, &plain, &up));
        held.hold(0, plain);
        assert!(!held.must_wait(1, &read("d", None), &up));
        assert!(held.release(&up).is_none());
        assert_eq!(held.waiting_for().map(|c| c.epoch), Some(2));
        // Attempt 2 committed epoch 2: attempt 1's record is released (to be
        // skipped by the caller), then the plain one, and the partition is free.
        up.0.lock().unwrap().insert(2, 2);
        let r = held.release(&up).unwrap();
        assert_eq!(r.record, "b");
        assert_eq!(up.counts(r.copy.as_ref().unwrap()), Some(false));
        assert!(held.holds(0));
        assert_eq!(held.release(&up).unwrap().record, "c");
        assert!(held.is_empty() && !held.holds(0) && held.len() == 0);
    }
}
