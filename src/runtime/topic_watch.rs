//! Notices a source topic that vanishes under a running job. Its
//! consumer does not say so: it fetches on and gets errors it keeps to
//! itself, and the job would sit silent for ever; or, if the topic is
//! made again at once, it reads whatever the new topic holds at its old
//! offsets. A thread of the process asks the broker every two seconds
//! whether each source topic is still there with all its partitions, and
//! whether any partition's end has gone back (which only a topic made
//! again does), and tells the writer, which stops the job with the
//! topic's name, when one is not.

use crate::connectors::kafka_admin::{client_config, end_offsets_within};
use crate::dataflow::output::WriterMsg;
use crossbeam_channel::Sender;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(2);

/// Watches `topics` (name, partitions the job reads) until `stop` is set
/// or the writer has gone.
pub(super) fn watch(
    brokers: &crate::connectors::kafka_config::Brokers,
    topics: Vec<(Arc<str>, i32)>,
    writer: Sender<WriterMsg>,
    stop: Arc<AtomicBool>,
) {
    if topics.is_empty() {
        return;
    }
    let config = client_config(brokers);
    let brokers = brokers.clone();
    let spawned = std::thread::Builder::new()
        .name("rill-topic-watch".into())
        .spawn(move || {
            let mut ends: Vec<Vec<i64>> = topics.iter().map(|_| Vec::new()).collect();
            // The first look is at once: a later one learns the ends of a
            // topic that may have been made again in between.
            let mut first = true;
            while !stop.load(Ordering::SeqCst) {
                if !std::mem::take(&mut first) {
                    std::thread::sleep(EVERY);
                }
                // A client of its own each time: one that knew the topic
                // before it was made again keeps asking about the old one.
                let Ok(consumer) = config.create::<BaseConsumer>() else {
                    continue;
                };
                let consumer = crate::connectors::DropAside::new(consumer);
                for ((topic, partitions), ends) in topics.iter().zip(&mut ends) {
                    // A broker that does not answer is not a missing topic:
                    // the clients of the job notice it themselves.
                    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))
                    else {
                        continue;
                    };
                    let found = md.topics().iter().find(|t| t.name() == &**topic);
                    let what = gone(
                        found
                            .map(|t| (t.error().map(RDKafkaErrorCode::from), t.partitions().len())),
                        *partitions,
                    )
                    .or_else(|| {
                        // The end read, not asked for: some brokers answer
                        // with the start of the last batch (see
                        // `kafka_admin::end_offsets`).
                        let limit = Some(Duration::from_secs(5));
                        let now = end_offsets_within(&brokers, topic, *partitions, limit)
                            .ok()?
                            .into_iter()
                            .map(|(_, end)| end)
                            .collect();
                        went_back(std::mem::replace(ends, now).as_slice(), ends)
                    });
                    let Some(what) = what else {
                        continue;
                    };
                    let _ = writer.send(WriterMsg::SourceGone {
                        topic: topic.to_string(),
                        what,
                    });
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the source topics: {e}");
    }
}

/// What became of a topic read with `partitions` partitions, from the
/// broker's metadata about it (its error, its partitions), if anything.
fn gone(found: Option<(Option<RDKafkaErrorCode>, usize)>, partitions: i32) -> Option<String> {
    match found {
        None | Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _)) => {
            Some("was deleted".into())
        }
        Some((None, n)) if (n as i32) < partitions => Some(format!(
            "has {n} partitions now, where the job reads {partitions}"
        )),
        _ => None,
    }
}

/// Whether a partition's end went back since the last look: a topic
/// only grows, unless it was deleted and made again in between.
fn went_back(before: &[i64], now: &[i64]) -> Option<String> {
    before
        .iter()
        .zip(now)
        .any(|(b, n)| n < b)
        .then(|| "was deleted and made again".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_missing_or_with_fewer_partitions_is_gone() {
        assert_eq!(gone(None, 2), Some("was deleted".into()));
        assert_eq!(
            gone(
                Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), 0)),
                2
            ),
            Some("was deleted".into())
        );
        assert_eq!(
            gone(Some((None, 1)), 2),
            Some("has 1 partitions now, where the job reads 2".into())
        );
        assert_eq!(gone(Some((None, 2)), 2), None);
        assert_eq!(gone(Some((None, 4)), 2), None, "partitions added");
        assert_eq!(went_back(&[], &[0, 0]), None, "the first look");
        assert_eq!(went_back(&[10, 12], &[10, 15]), None);
        assert_eq!(
            went_back(&[10, 12], &[10, 3]),
            Some("was deleted and made again".into())
        );
        // Another error (a leader moving, say) is not a deletion.
        assert_eq!(
            gone(Some((Some(RDKafkaErrorCode::LeaderNotAvailable), 2)), 2),
            None
        );
    }
}
