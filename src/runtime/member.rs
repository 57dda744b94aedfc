//! A cluster process's writer side of the control connection: it reports
//! the epochs it has finished, tells process 0 when it has prepared each
//! epoch the leader names (and hands it the epoch's dead letters and
//! changelog records), and writes its files and rows and commits once
//! process 0 has fixed the epoch in the log ([`Member`]). Process 0's
//! writer gathers the shares and tells the others when to commit
//! ([`Peers`]).

use super::control::{EpochReport, Event, KafkaShare, Link, ToLeader, ToMember};
use super::error::RunError;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Member {
    link: Link<ToLeader>,
    rx: Receiver<Event<ToMember>>,
    /// The process's stop flag: set by Ctrl-C here, or by the leader.
    stop: Arc<AtomicBool>,
    stop_sent: bool,
    /// Epochs the leader named and the writer has yet to commit.
    backlog: VecDeque<u64>,
    /// Every epoch below this that is to be committed has been named.
    named_upto: u64,
    done: bool,
}

impl Member {
    pub fn new(link: Link<ToLeader>, rx: Receiver<Event<ToMember>>, stop: Arc<AtomicBool>) -> Self {
        Member {
            link,
            rx,
            stop,
            stop_sent: false,
            backlog: VecDeque::new(),
            named_upto: 0,
            done: false,
        }
    }

    pub fn send(&self, m: &ToLeader) -> Result<(), RunError> {
        if self.link.send(m) {
            Ok(())
        } else {
            // The reader names the cause; wait a moment for it.
            Err(match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Event::Lost(reason)) => RunError::ClusterStopped { reason },
                _ => RunError::ClusterStopped {
                    reason: "the connection to process 0 broke".into(),
                },
            })
        }
    }

    fn handle(&mut self, m: Event<ToMember>) -> Result<Option<(u64, i64)>, RunError> {
        match m {
            // Process 0 exits once every writer has finished.
            Event::Lost(_) if self.done => Ok(None),
            Event::Lost(reason) => Err(RunError::ClusterStopped { reason }),
            Event::Msg(ToMember::Abort { reason }) => Err(RunError::ClusterStopped { reason }),
            Event::Msg(ToMember::Epochs { list, upto }) => {
                self.backlog.extend(list);
                self.named_upto = self.named_upto.max(upto);
                Ok(None)
            }
            Event::Msg(ToMember::Decided { epoch, offset }) => Ok(Some((epoch, offset))),
            Event::Msg(ToMember::Stop) => {
                self.stop.store(true, Ordering::SeqCst);
                Ok(None)
            }
            Event::Msg(ToMember::Done) => {
                self.done = true;
                Ok(None)
            }
            Event::Msg(ToMember::Start(_)) | Event::Msg(ToMember::Heartbeat) => Ok(None),
        }
    }

    fn unexpected(epoch: u64) -> RunError {
        RunError::ClusterStopped {
            reason: format!("epoch {epoch} was decided out of turn; this is a bug in rill"),
        }
    }

    /// Passes a stop asked for here (Ctrl-C) on to the leader, once.
    fn pass_on_stop(&mut self) -> Result<(), RunError> {
        if self.stop.load(Ordering::SeqCst) && !self.stop_sent {
            self.stop_sent = true;
            self.send(&ToLeader::Stop)?;
        }
        Ok(())
    }

    /// Takes what has arrived, without waiting, and passes a stop asked
    /// for here on to the leader.
    pub fn poll(&mut self) -> Result<(), RunError> {
        self.pass_on_stop()?;
        while let Ok(m) = self.rx.try_recv() {
            if let Some((epoch, _)) = self.handle(m)? {
                return Err(Self::unexpected(epoch));
            }
        }
        Ok(())
    }

    /// The next epoch the leader named, if any.
    pub fn next_epoch(&mut self) -> Option<u64> {
        self.backlog.pop_front()
    }

    /// Whether every epoch there will be is named and committed.
    pub fn all_named_committed(&self) -> bool {
        self.named_upto == u64::MAX && self.backlog.is_empty()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Waits until process 0 has fixed `epoch` in the log: the offset of
    /// its record.
    pub fn await_decision(&mut self, epoch: u64) -> Result<i64, RunError> {
        loop {
            let m = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.pass_on_stop()?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RunError::ClusterStopped {
                        reason: "the leader stopped".into(),
                    })
                }
            };
            match self.handle(m)? {
                Some((e, offset)) if e == epoch => return Ok(offset),
                Some((e, _)) => return Err(Self::unexpected(e)),
                None => {}
            }
        }
    }
}

/// One process's share of an epoch, as process 0 receives it.
pub struct PreparedShare {
    pub read: BTreeMap<(u32, i32), (i64, i64)>,
    pub waiting: Vec<(u32, i32)>,
    pub report: EpochReport,
    pub share: KafkaShare,
}

/// What process 0's writer hears from the other processes: their shares
/// and that they have written their files and rows, or that one was lost.
pub enum PeerEvent {
    Prepared(u64, Box<PreparedShare>),
    Written(u64),
    Lost(String),
}

/// Process 0's side: the other processes' shares of each epoch.
pub struct Peers {
    rx: Receiver<(usize, PeerEvent)>,
    links: Vec<Link<ToMember>>,
    prepared: BTreeMap<u64, Vec<PreparedShare>>,
    written: BTreeMap<u64, usize>,
}

impl Peers {
    /// `links`: to processes 1 and up.
    pub fn new(rx: Receiver<(usize, PeerEvent)>, links: Vec<Link<ToMember>>) -> Self {
        Peers {
            rx,
            links,
            prepared: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    fn next(&mut self) -> Result<(), RunError> {
        match self.rx.recv_timeout(Duration::from_secs(600)) {
            Ok((_, PeerEvent::Prepared(epoch, share))) => {
                self.prepared.entry(epoch).or_default().push(*share);
                Ok(())
            }
            Ok((_, PeerEvent::Written(epoch))) => {
                *self.written.entry(epoch).or_default() += 1;
                Ok(())
            }
            Ok((_, PeerEvent::Lost(reason))) => Err(RunError::ClusterStopped { reason }),
            Err(_) => Err(RunError::ClusterStopped {
                reason: "the other processes sent nothing for 600 s".into(),
            }),
        }
    }

    /// Every other process's share of `epoch`, once all have sent it.
    pub fn shares_of(&mut self, epoch: u64) -> Result<Vec<PreparedShare>, RunError> {
        while self.prepared.get(&epoch).map_or(0, Vec::len) < self.links.len() {
            self.next()?;
        }
        Ok(self.prepared.remove(&epoch).unwrap_or_default())
    }

    /// `epoch` is in the log, its record at `offset`: every other process
    /// writes its files and rows and commits; returns once all have.
    pub fn decided(&mut self, epoch: u64, offset: i64) -> Result<(), RunError> {
        for l in &self.links {
            l.send(&ToMember::Decided { epoch, offset });
        }
        while self.written.get(&epoch).copied().unwrap_or(0) < self.links.len() {
            self.next()?;
        }
        self.written.remove(&epoch);
        // Every other writer has committed the epoch; process 0 has not.
        crate::fault::point("peers_committed");
        Ok(())
    }
}
