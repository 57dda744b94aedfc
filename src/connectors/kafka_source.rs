//! Kafka source: each worker assigns itself partitions p with
//! p mod workers == its index and polls without blocking; librdkafka
//! fetches on its own threads. No consumer group takes part in the data
//! path, so no rebalance can move a partition under a running epoch.

use super::kafka_admin::{client_config, EofIsNotAnError};
use super::kafka_config::default_to;
use super::written_by::{Held, Read, Upstream, WrittenBy};
use super::{Poll, SourceReader};
use crate::record::{Origin, RawCopies, RawRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Records of undecided upstream epochs a reader holds before it stops
/// reading until they are decided.
const MAX_HELD: usize = 20_000;

pub struct KafkaSource {
    consumer: super::DropAside<BaseConsumer<EofIsNotAnError>>,
    source: u32,
    /// (partition, next offset to hand on, end offset to stop at when bounded)
    partitions: Vec<(i32, i64, Option<i64>)>,
    bounded: bool,
    /// Epochs logged before a restart and not committed: each with the end
    /// offset of each of this reader's partitions. They are cut again
    /// exactly as logged.
    replay: VecDeque<(u64, HashMap<i32, i64>)>,
    /// Records read ahead of the epoch being replayed, each with whether
    /// it counts (see `upstream`).
    ahead: HashMap<i32, VecDeque<(RawRecord, bool)>>,
    topic: String,
    /// Which copies of another rill job's output count; None reads every
    /// record as it comes.
    upstream: Option<Arc<dyn Upstream>>,
    /// Records of epochs their writing job has not decided yet, with the
    /// records behind them in their partitions.
    held: Held<RawRecord>,
    /// Since when records are held, to say what the run waits for.
    held_since: Option<std::time::Instant>,
    /// The last copy decided, and whether it counts.
    last: Option<(WrittenBy, bool)>,
    /// Partitions that reached their end while records of theirs were
    /// held: at their end once those are handed on.
    eof_after_held: Vec<i32>,
    copies: RawCopies,
    /// Read only the epochs to replay (finishing an epoch in doubt).
    replay_only: bool,
    /// Every replayed epoch, with the partitions of this reader that had
    /// records waiting when it was first cut.
    replayed_waiting: std::collections::BTreeMap<u64, Vec<i32>>,
}

/// How long a fetch may wait at the broker for records (`fetch.wait.max.ms`):
/// as long as an epoch, from 50 ms to Kafka's default of 500. Every fetch
/// answered is a request the broker serves; at 50 ms, a job reading a
/// topic its producer writes a record at a time slowed that producer's
/// acknowledgements from 2 ms to seconds on Tansu (docs/performance.md),
/// while a wait of an epoch costs a record at most the epoch it would
/// wait for anyway. A bounded run asks at 50 ms, so that the end of its
/// input is heard soon.
pub fn fetch_wait_ms(bounded: bool, checkpoint_interval_ms: u64) -> u64 {
    if bounded {
        50
    } else {
        checkpoint_interval_ms.clamp(50, 500)
    }
}

impl KafkaSource {
    /// `ranges` holds, for each partition this worker reads, the offset to
    /// start at and (for bounded runs) the end offset to stop at.
    pub fn new(
        brokers: &crate::connectors::kafka_config::Brokers,
        topic: &str,
        source: u32,
        ranges: Vec<(i32, i64, Option<i64>)>,
        bounded: bool,
        checkpoint_interval_ms: u64,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = client_config(brokers);
        config
            .set("group.id", format!("rill-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            // An offset retention has deleted is an error, never a jump.
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", bounded.to_string());
        // Read ahead enough to keep the workers busy between fetches,
        // not librdkafka's 64 MiB per partition, so memory stays flat;
        // and fetch again as soon as the queue drains below that,
        // instead of librdkafka's default wait of a second. The bound
        // is in records and in fetch size both: librdkafka keeps an
        // operation of about 300 bytes per fetched record beside its
        // bytes, so a byte bound alone let 90,000 small records per
        // partition queue up. How long a fetch waits at the broker: see
        // `fetch_wait_ms`. Each is a default a source's `kafka` properties
        // may change.
        let wait = fetch_wait_ms(bounded, checkpoint_interval_ms).to_string();
        for (key, value) in [
            ("fetch.wait.max.ms", wait.as_str()),
            ("queued.min.messages", "10000"),
            ("queued.max.messages.kbytes", "1024"),
            ("max.partition.fetch.bytes", "262144"),
            ("fetch.queue.backoff.ms", "10"),
        ] {
            default_to(&mut config, key, value);
        }
        let consumer: BaseConsumer<EofIsNotAnError> =
            config.create_with_context(EofIsNotAnError)?;
        let mut tpl = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for (p, start, end) in ranges {
            if bounded && end.is_some_and(|e| start >= e) {
                continue;
            }
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            partitions.push((p, start, end));
        }
        consumer.assign(&tpl)?;
        Ok(KafkaSource {
            consumer: super::DropAside::new(consumer),
            source,
            partitions,
            bounded,
            replay: VecDeque::new(),
            ahead: HashMap::new(),
            topic: topic.to_string(),
            upstream: None,
            held: Held::default(),
            held_since: None,
            last: None,
            eof_after_held: Vec::new(),
            copies: RawCopies::default(),
            replay_only: false,
            replayed_waiting: Default::default(),
        })
    }

    /// Reads records other rill jobs wrote through `upstream`: copies of
    /// attempts that never committed are skipped.
    pub fn with_upstream(mut self, upstream: Arc<dyn Upstream>) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Epochs to replay first: (epoch, end offset per partition, the
    /// partitions that had records waiting past it), ascending. Epochs in
    /// which none of this reader's partitions had records are not read
    /// again. With `only`, the reader is done once they are.
    pub fn with_replay(
        mut self,
        replay: Vec<(u64, HashMap<i32, i64>, Vec<i32>)>,
        only: bool,
    ) -> Self {
        self.replay_only = only;
        let mut last: HashMap<i32, i64> = self
            .partitions
            .iter()
            .map(|(p, next, _)| (*p, *next))
            .collect();
        for (epoch, ends, waiting) in replay {
            let waiting = waiting
                .into_iter()
                .filter(|p| last.contains_key(p))
                .collect();
            self.replayed_waiting.insert(epoch, waiting);
            let mine: HashMap<i32, i64> = ends
                .into_iter()
                .filter(|(p, _)| last.contains_key(p))
                .collect();
            let grows = mine.iter().any(|(p, end)| *end > last[p]);
            for (p, end) in &mine {
                last.insert(*p, *end);
            }
            if grows {
                self.replay.push_back((epoch, mine));
            }
        }
        self
    }

    /// This reader's partitions with records past those handed on: read
    /// ahead, held, or at the broker (the end offset the consumer last
    /// heard of, past its position, which moves over commit markers).
    fn waiting_now(&self) -> Vec<i32> {
        let positions = self.consumer.position().ok();
        let position = |p: i32| {
            positions
                .as_ref()
                .and_then(|l| l.find_partition(&self.topic, p))
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1)
        };
        let topic = std::ffi::CString::new(self.topic.as_str()).expect("a topic name has no NUL");
        self.partitions
            .iter()
            .filter(|(p, next, _)| {
                if self.ahead.get(p).is_some_and(|q| !q.is_empty()) || self.held.holds(*p) {
                    return true;
                }
                let (mut low, mut high) = (-1i64, -1i64);
                // The end offset as the last fetch reported it: no request.
                // SAFETY: the client lives as long as `self`, the name is a
                // C string that outlives the call, the outputs are locals.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        self.consumer.client().native_ptr(),
                        topic.as_ptr(),
                        *p,
                        &mut low,
                        &mut high,
                    )
                };
                err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    && high > (*next).max(position(*p))
            })
            .map(|(p, _, _)| *p)
            .collect()
    }

    fn finished(&self) -> bool {
        if self.replay_only {
            // What was read ahead belongs to epochs after those replayed.
            return self.replay.is_empty();
        }
        self.bounded
            && self.replay.is_empty()
            && self.held.is_empty()
            && self.ahead.values().all(VecDeque::is_empty)
            && self
                .partitions
                .iter()
                .all(|(_, next, end)| end.is_some_and(|e| *next >= e))
    }

    /// A bounded reader at a partition's EOF has read everything that was
    /// there at start; the end offset may point past commit markers, which
    /// never arrive as records.
    fn at_eof(&mut self, partition: i32) {
        if !self.bounded || !self.replay.is_empty() {
            return;
        }
        // Records of the partition still held come before its end.
        if self.held.holds(partition) {
            if !self.eof_after_held.contains(&partition) {
                self.eof_after_held.push(partition);
            }
            return;
        }
        if let Some(slot) = self.partitions.iter_mut().find(|x| x.0 == partition) {
            if let Some(end) = slot.2 {
                slot.1 = slot.1.max(end);
            }
        }
    }

    /// Partitions whose end came while records of theirs were held are at
    /// their end once those records are handed on.
    fn settle_eof(&mut self) {
        let pending = std::mem::take(&mut self.eof_after_held);
        for p in pending {
            self.at_eof(p);
        }
    }

    /// The next record the consumer has ready, if any, and whether it
    /// counts (a copy of another job's output that never committed does
    /// not); never waits.
    fn next_record(&mut self) -> Option<(RawRecord, bool)> {
        if let Some(up) = self.upstream.as_deref() {
            if let Some(read) = self.held.release(up) {
                if self.held.is_empty() {
                    self.held_since = None;
                }
                let keep = read
                    .copy
                    .as_ref()
                    .is_none_or(|c| up.counts(c) == Some(true));
                return Some((read.record, keep));
            }
            if let Some(since) = self.held_since {
                if since.elapsed() > Duration::from_secs(10) {
                    if let Some(c) = self.held.waiting_for() {
                        tracing::warn!(
                            "source {}: waiting for job `{}` to commit its epoch {}: records its attempt {} wrote are held until it does (is that job running?)",
                            self.topic, c.job, c.epoch, c.attempt
                        );
                    }
                    self.held_since = Some(std::time::Instant::now());
                }
            }
        }
        // Held records wait in memory; past a bound the reader stops
        // taking more until they are decided, and librdkafka stops
        // fetching once its own queue is full. (Pausing the partition
        // instead left librdkafka fetching at half speed after resuming.)
        if self.held.len() >= MAX_HELD {
            return None;
        }
        loop {
            match self.consumer.poll(Duration::ZERO)? {
                Err(KafkaError::PartitionEOF(p)) => self.at_eof(p),
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) => {
                    // Records deleted before they were read: stopping is the
                    // only way not to lose them quietly.
                    panic!("kafka source {}: {e}: the offsets the job reads from are gone: retention deleted records before the job read them (raise the topic's retention.ms), or the topic was deleted and made again, starting over at offset 0 (run the job under a new name to read it from its start)", self.topic);
                }
                Err(e) => {
                    tracing::warn!("kafka source: {e}");
                    return None;
                }
                Ok(m) => {
                    let Some(up) = self.upstream.as_deref() else {
                        return Some((Self::to_raw(&mut self.copies, self.source, &m), true));
                    };
                    let partition = m.partition();
                    let copy = WrittenBy::read(&m);
                    // Records come in runs of one copy: the last decision
                    // holds for the rest of the run.
                    if !self.held.holds(partition) {
                        match (&copy, &self.last) {
                            (None, _) => {
                                return Some((
                                    Self::to_raw(&mut self.copies, self.source, &m),
                                    true,
                                ))
                            }
                            (Some(c), Some((w, keep))) if c.is(w) => {
                                return Some((
                                    Self::to_raw(&mut self.copies, self.source, &m),
                                    *keep,
                                ))
                            }
                            _ => {}
                        }
                    }
                    let read = Read {
                        record: Self::to_raw(&mut self.copies, self.source, &m),
                        copy: copy.map(|c| c.owned()),
                    };
                    drop(m);
                    if self.held.must_wait(partition, &read, up) {
                        if self.held.is_empty() {
                            self.held_since = Some(std::time::Instant::now());
                        }
                        self.held.hold(partition, read);
                        if self.held.len() >= MAX_HELD {
                            return None;
                        }
                        continue;
                    }
                    let keep = match &read.copy {
                        Some(c) => {
                            let keep = up.counts(c) == Some(true);
                            self.last = Some((c.clone(), keep));
                            keep
                        }
                        None => true,
                    };
                    return Some((read.record, keep));
                }
            }
        }
    }

    /// The message copied out of the client's buffer: the client reuses
    /// it. Takes the fields it needs, as the message borrows the consumer.
    fn to_raw(
        copies: &mut RawCopies,
        source: u32,
        m: &rdkafka::message::BorrowedMessage<'_>,
    ) -> RawRecord {
        RawRecord {
            key: m.key().map(|k| copies.keys.copy(k)),
            value: m.payload().map(|v| copies.values.copy(v)),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            origin: Origin {
                source,
                partition: m.partition(),
                offset: m.offset(),
            },
        }
    }

    /// Hands on `r` if it is the next record of its partition (and, when
    /// bounded, before the end) and it counts; one that does not still
    /// moves the partition on.
    fn accept(&mut self, (r, keep): (RawRecord, bool), out: &mut Vec<RawRecord>) {
        let Some(slot) = self
            .partitions
            .iter_mut()
            .find(|x| x.0 == r.origin.partition)
        else {
            return;
        };
        if r.origin.offset < slot.1 {
            return;
        }
        slot.1 = r.origin.offset + 1;
        if !keep || self.bounded && slot.2.is_some_and(|e| r.origin.offset >= e) {
            return;
        }
        out.push(r);
    }
}

impl SourceReader for KafkaSource {
    fn replaying(&self) -> bool {
        !self.replay.is_empty()
    }

    fn waiting(&mut self, from: u64, to: u64) -> Vec<(u64, Vec<i32>)> {
        let mut out: Vec<(u64, Vec<i32>)> = self
            .replayed_waiting
            .range(from..to)
            .filter(|(_, w)| !w.is_empty())
            .map(|(e, w)| (*e, w.clone()))
            .collect();
        // An epoch cut live: past every replayed one.
        let live = self
            .replayed_waiting
            .keys()
            .next_back()
            .is_none_or(|last| from > *last);
        if live {
            let now = self.waiting_now();
            if !now.is_empty() {
                out.push((from, now));
            }
        }
        out
    }

    fn poll_scripted(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Option<(u64, Poll)> {
        let (epoch, ends) = self.replay.front().cloned()?;
        let fits = |(r, _): &(RawRecord, bool)| {
            ends.get(&r.origin.partition)
                .is_some_and(|end| r.origin.offset < *end)
        };
        // First what was read ahead, then the consumer; never more than
        // `max`, which a rate limit sets too.
        let parts: Vec<i32> = self.ahead.keys().copied().collect();
        for p in parts {
            while let Some(r) = self
                .ahead
                .get_mut(&p)
                .filter(|_| out.len() < max)
                .and_then(|q| q.front().filter(|r| fits(r)).cloned())
            {
                self.ahead.get_mut(&p).unwrap().pop_front();
                self.accept(r, out);
            }
        }
        while out.len() < max {
            let Some(r) = self.next_record() else { break };
            if fits(&r) {
                self.accept(r, out);
            } else {
                self.ahead
                    .entry(r.0.origin.partition)
                    .or_default()
                    .push_back(r);
            }
        }
        let done = ends.iter().all(|(p, end)| {
            self.partitions
                .iter()
                .find(|x| x.0 == *p)
                .is_none_or(|x| x.1 >= *end)
        });
        if done {
            self.replay.pop_front();
        }
        if out.is_empty() {
            return Some((epoch, Poll::Idle));
        }
        Some((epoch, Poll::Data))
    }

    /// librdkafka calls it from its own thread when the consumer's queue
    /// turns non-empty: a fetch answered.
    fn wake_on_data(&mut self, wake: Box<dyn Fn() + Send + Sync>) -> bool {
        self.consumer.set_nonempty_callback(wake);
        true
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Poll {
        if self.finished() {
            return Poll::Done;
        }
        // Records read ahead during a replay come first, up to `max`.
        let parts: Vec<i32> = self.ahead.keys().copied().collect();
        for p in parts {
            let queue = self.ahead.get_mut(&p).unwrap();
            let n = queue.len().min(max.saturating_sub(out.len()));
            let taken: Vec<(RawRecord, bool)> = queue.drain(..n).collect();
            if queue.is_empty() {
                self.ahead.remove(&p);
            }
            for r in taken {
                self.accept(r, out);
            }
        }
        while out.len() < max {
            let Some(r) = self.next_record() else { break };
            self.accept(r, out);
        }
        self.settle_eof();
        if !out.is_empty() {
            Poll::Data
        } else if self.finished() {
            Poll::Done
        } else {
            Poll::Idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_fetch_waits_about_an_epoch_and_a_bounded_one_briefly() {
        assert_eq!(fetch_wait_ms(false, 100), 100);
        assert_eq!(fetch_wait_ms(false, 10), 50);
        assert_eq!(fetch_wait_ms(false, 1000), 500);
        assert_eq!(fetch_wait_ms(true, 1000), 50);
    }
}
