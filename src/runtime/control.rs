//! The control connections of a cluster: every process keeps one with
//! process 0, which names the epochs to commit and commits them. Messages
//! are postcard frames with a length before each; both
//! ends send a heartbeat every second, and a connection that closes, or
//! says nothing for [`SILENCE`], is a lost process: timely itself sets no
//! timeouts and would wait for it forever.
//!
//! Process 0's own writer talks to the leader through channels with the
//! same messages, so the leader treats every process alike.

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A peer that sends nothing for this long is taken for hung.
pub const SILENCE: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(1);

/// What a process's writer tells process 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToLeader {
    /// Every epoch below `upto` is complete; of those since the last
    /// report, `active` hold something of this process.
    Frontier {
        upto: u64,
        active: Vec<u64>,
    },
    /// The process has sent its output of `epoch` in its writer's
    /// transaction and flushed it (or skips the epoch, committed before).
    /// With it: what it read, its counts, and its dead letters and
    /// changelog records (process 0's writer sends them).
    Prepared {
        epoch: u64,
        read: Vec<(u32, i32, i64, i64)>,
        /// (source, partition) with records waiting when the epoch ended.
        waiting: Vec<(u32, i32)>,
        report: EpochReport,
        share: KafkaShare,
    },
    /// The process has written its files and rows of `epoch` and
    /// committed its transaction.
    Written {
        epoch: u64,
    },
    /// Ctrl-C here: the whole cluster stops after its open epoch.
    Stop,
    /// The writer has committed its last epoch.
    Finished {
        share: Share,
    },
    Heartbeat,
    /// Every second: the lowest frontier of the process's workers, and
    /// whether they hold it on purpose (see `runtime/liveness.rs`).
    Pulse {
        frontier: u64,
        waiting: bool,
    },
}

/// What process 0 tells every process's writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToMember {
    Start(Box<StartPlan>),
    /// Commit these epochs, in order; every epoch below `upto` that is to
    /// be committed has been named.
    Epochs {
        list: Vec<u64>,
        upto: u64,
    },
    /// `epoch` is in the epoch log, its record at `offset`, and every
    /// writer's share of it flushed: write its files and rows, then commit
    /// with the progress just past `offset`.
    Decided {
        epoch: u64,
        offset: i64,
    },
    Stop,
    /// The cluster stops: a process was lost or fenced.
    Abort {
        reason: String,
    },
    /// Every writer has finished.
    Done,
    Heartbeat,
}

/// What a process hands process 0's writer of one epoch: its dead
/// letters and changelog records. Their topics have one partition, which
/// process 0's writer alone writes; output records go to the writer that
/// owns their partition instead.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KafkaShare {
    /// (key, value, reason, topic, partition, offset).
    #[allow(clippy::type_complexity)]
    pub dead: Vec<(Option<Vec<u8>>, Option<Vec<u8>>, String, String, i32, i64)>,
    pub changelog: Vec<(String, Vec<(Vec<u8>, Option<Vec<u8>>)>)>,
}

impl KafkaShare {
    /// Takes the dead letters and changelog records out of `o`, leaving
    /// its output records.
    pub fn take_from(o: &mut super::commit::EpochOutput) -> Self {
        KafkaShare {
            dead: std::mem::take(&mut o.dead)
                .into_iter()
                .map(|d| {
                    let key = d.key.map(|k| k.to_vec());
                    (
                        key,
                        d.value,
                        d.reason,
                        d.topic.to_string(),
                        d.partition,
                        d.offset,
                    )
                })
                .collect(),
            changelog: std::mem::take(&mut o.changelog)
                .into_iter()
                .map(|(t, rs)| (t.to_string(), rs))
                .collect(),
        }
    }

    /// Adds this share to `o`, the epoch's output in process 0.
    pub fn add_to(self, o: &mut super::commit::EpochOutput) {
        use crate::record::DeadLetter;
        for (key, value, reason, topic, partition, offset) in self.dead {
            o.dead.push(DeadLetter {
                key: key.map(Into::into),
                value,
                reason,
                topic: topic.into(),
                partition,
                offset,
            });
        }
        for (t, rs) in self.changelog {
            o.changelog.push((t.into(), rs));
        }
    }
}

/// An epoch's counts as one process saw them, for the combined progress
/// line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochReport {
    pub inputs: Vec<u64>,
    /// Records into each transform, by position.
    #[serde(default)]
    pub through: Vec<u64>,
    pub out: Vec<u64>,
    /// Bytes read per source, and written per sink (keys and values).
    #[serde(default)]
    pub bytes_in: Vec<u64>,
    #[serde(default)]
    pub bytes_out: Vec<u64>,
    /// Records and bytes read, per (source, partition).
    #[serde(default)]
    pub partitions: Vec<(u32, i32, u64, u64)>,
    pub dead: u64,
    pub late: u64,
    pub filtered: u64,
    /// A sample of the timestamps of the records read.
    #[serde(default)]
    pub timestamps: Vec<i64>,
}

/// What a process did beyond its epochs' counts, for the summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Share {
    pub files: Vec<std::path::PathBuf>,
    pub postgres_rows: u64,
    pub fallback_rows: u64,
    pub postgres_ms: u64,
}

/// Where every process resumes: the leader's recovery, for all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartPlan {
    pub attempt: u32,
    pub committed: u64,
    pub next_epoch: u64,
    pub start_offsets: Option<Vec<(u32, i32, i64)>>,
    /// (epoch, [(source, partition, start, end, waiting)]): postcard
    /// keeps every field, so no field of a range may be left out.
    pub replay: Vec<(u64, Vec<(u32, i32, i64, i64, bool)>)>,
    /// This run of the job, which every sink claims.
    pub incarnation: Option<String>,
    /// Schema ids the leader registered, by sink node.
    pub sink_schema_ids: Vec<(usize, u32)>,
    /// Per replayed epoch, the writers that committed it before.
    pub skip: Vec<(u64, Vec<u32>)>,
    /// Offset of the committed epoch's record in the log.
    pub committed_offset: Option<i64>,
    /// How many writers' progress the recovery counted; a writer past
    /// them joins the job at the committed epoch.
    pub writers_before: u32,
}

/// What arrives on a link: a message, or the news that the peer is gone.
#[derive(Debug)]
pub enum Event<M> {
    Msg(M),
    Lost(String),
}

/// One end of a control connection.
pub struct Link<Out> {
    send: Arc<dyn Fn(&Out) -> bool + Send + Sync>,
}

impl<Out> Clone for Link<Out> {
    fn clone(&self) -> Self {
        Link {
            send: self.send.clone(),
        }
    }
}

impl<Out> Link<Out> {
    /// Sends a message; false when the peer is gone (its reader says why).
    pub fn send(&self, m: &Out) -> bool {
        (self.send)(m)
    }
}

/// Channels between process 0's writer and its leader.
pub fn local_pair() -> (
    Link<ToLeader>,
    Receiver<Event<ToMember>>,
    Link<ToMember>,
    Receiver<Event<ToLeader>>,
) {
    let (to_leader, leader_rx) = crossbeam_channel::unbounded();
    let (to_member, member_rx) = crossbeam_channel::unbounded();
    let up = Link {
        send: Arc::new(move |m: &ToLeader| to_leader.send(Event::Msg(m.clone())).is_ok()),
    };
    let down = Link {
        send: Arc::new(move |m: &ToMember| to_member.send(Event::Msg(m.clone())).is_ok()),
    };
    (up, member_rx, down, leader_rx)
}

/// A control connection over TCP: a link to send on, and a channel that
/// receives what the peer sends, heartbeats taken out. `peer` names the
/// other end in the reason a loss gives. The threads end with `closed`.
pub fn over_tcp<Out, In>(
    stream: TcpStream,
    peer: String,
    closed: Arc<AtomicBool>,
) -> (Link<Out>, Receiver<Event<In>>)
where
    Out: Serialize + Send + 'static + HeartbeatMsg,
    In: for<'de> Deserialize<'de> + Send + 'static + HeartbeatMsg,
{
    let _ = stream.set_read_timeout(Some(SILENCE));
    let writer = Arc::new(Mutex::new(BufWriter::new(
        stream.try_clone().expect("a socket can be cloned"),
    )));
    let send_on = |w: &Mutex<BufWriter<TcpStream>>, m: &Out| -> bool {
        let frame = postcard::to_allocvec(m).expect("control messages serialise");
        let mut w = w.lock().unwrap();
        w.write_all(&(frame.len() as u32).to_be_bytes())
            .and_then(|_| w.write_all(&frame))
            .and_then(|_| w.flush())
            .is_ok()
    };
    let beat = writer.clone();
    let beat_closed = closed.clone();
    std::thread::Builder::new()
        .name("rill-heartbeat".into())
        .spawn(move || {
            while !beat_closed.load(Ordering::SeqCst) {
                if !send_on(&beat, &Out::heartbeat()) {
                    return;
                }
                std::thread::sleep(HEARTBEAT);
            }
        })
        .expect("spawn heartbeat thread");
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("rill-control".into())
        .spawn(move || read_loop::<In>(stream, peer, tx, closed))
        .expect("spawn control reader");
    let link = Link {
        send: Arc::new(move |m: &Out| send_on(&writer, m)),
    };
    (link, rx)
}

fn read_loop<In>(stream: TcpStream, peer: String, tx: Sender<Event<In>>, closed: Arc<AtomicBool>)
where
    In: for<'de> Deserialize<'de> + HeartbeatMsg,
{
    let mut reader = BufReader::new(stream);
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 4];
        let read = reader.read_exact(&mut len).and_then(|_| {
            frame.resize(u32::from_be_bytes(len) as usize, 0);
            reader.read_exact(&mut frame)
        });
        let lost = match read {
            Ok(()) => match postcard::from_bytes::<In>(&frame) {
                Ok(m) if m.is_heartbeat() => continue,
                Ok(m) => {
                    if tx.send(Event::Msg(m)).is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => format!("{peer} sent something unexpected: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                format!("{peer} closed its connection (it exited or was killed)")
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                format!(
                    "{peer} sent nothing for {} s (it hangs, or the network between us does)",
                    SILENCE.as_secs()
                )
            }
            Err(e) => format!("{peer}'s connection broke: {e}"),
        };
        if !closed.load(Ordering::SeqCst) {
            let _ = tx.send(Event::Lost(lost));
        }
        return;
    }
}

/// The heartbeat of a message type.
pub trait HeartbeatMsg {
    fn heartbeat() -> Self;
    fn is_heartbeat(&self) -> bool;
}

impl HeartbeatMsg for ToLeader {
    fn heartbeat() -> Self {
        ToLeader::Heartbeat
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self, ToLeader::Heartbeat)
    }
}

impl HeartbeatMsg for ToMember {
    fn heartbeat() -> Self {
        ToMember::Heartbeat
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self, ToMember::Heartbeat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn messages_cross_and_a_peer_that_exits_is_named() {
        let (a, b) = pair();
        let closed = Arc::new(AtomicBool::new(false));
        let (up, _from_leader) =
            over_tcp::<ToLeader, ToMember>(a, "process 0".into(), closed.clone());
        let (down, from_member) =
            over_tcp::<ToMember, ToLeader>(b, "process 1".into(), closed.clone());
        assert!(up.send(&ToLeader::Frontier {
            upto: 7,
            active: vec![5, 6]
        }));
        match from_member.recv_timeout(Duration::from_secs(5)).unwrap() {
            Event::Msg(ToLeader::Frontier { upto, active }) => {
                assert_eq!((upto, active), (7, vec![5, 6]))
            }
            other => panic!("{other:?}"),
        }
        drop(down);
        // A peer that exits is named at once; one that hangs, once it has
        // been silent too long.
        let (c, d) = pair();
        let (_down, rx) = over_tcp::<ToMember, ToLeader>(d, "process 1".into(), closed.clone());
        c.shutdown(std::net::Shutdown::Both).unwrap();
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Event::Lost(why)) => assert_eq!(
                why,
                "process 1 closed its connection (it exited or was killed)"
            ),
            other => panic!("{other:?}"),
        }
        let (_silent, f) = pair();
        let (_down, rx) = over_tcp::<ToMember, ToLeader>(f, "process 2".into(), closed.clone());
        match rx.recv_timeout(SILENCE * 2) {
            Ok(Event::Lost(why)) => assert_eq!(
                why,
                "process 2 sent nothing for 5 s (it hangs, or the network between us does)"
            ),
            other => panic!("{other:?}"),
        }
    }
}
