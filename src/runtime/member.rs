//! A cluster process's writer side of the control connection: it reports
//! the epochs it has finished, prepares each epoch the leader names, and
//! commits once the leader has decided it.

use super::control::{Event, Link, ToLeader, ToMember};
use super::error::RunError;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Member {
    pub process: u32,
    link: Link<ToLeader>,
    rx: Receiver<Event<ToMember>>,
    /// Per replayed epoch, the writers that committed it before.
    skip: BTreeMap<u64, Vec<u32>>,
    /// The process's stop flag: set by Ctrl-C here, or by the leader.
    stop: Arc<AtomicBool>,
    stop_sent: bool,
    /// Epochs the leader named and the writer has yet to commit.
    backlog: VecDeque<u64>,
    done: bool,
}

impl Member {
    pub fn new(
        process: u32,
        link: Link<ToLeader>,
        rx: Receiver<Event<ToMember>>,
        skip: BTreeMap<u64, Vec<u32>>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Member {
            process,
            link,
            rx,
            skip,
            stop,
            stop_sent: false,
            backlog: VecDeque::new(),
            done: false,
        }
    }

    pub fn send(&self, m: &ToLeader) -> Result<(), RunError> {
        if self.link.send(m) {
            Ok(())
        } else {
            Err(self.gone())
        }
    }

    fn gone(&self) -> RunError {
        // The reader names the cause; wait a moment for it.
        match self.rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Event::Lost(reason)) => RunError::ClusterStopped { reason },
            _ => RunError::ClusterStopped {
                reason: "the connection to process 0 broke".into(),
            },
        }
    }

    /// Whether this writer committed `epoch` before the restart: it cuts
    /// the epoch again for its state and sends nothing of it.
    pub fn skips(&self, epoch: u64) -> bool {
        self.skip
            .get(&epoch)
            .is_some_and(|w| w.contains(&self.process))
    }

    fn handle(&mut self, m: Event<ToMember>) -> Result<Option<(u64, i64)>, RunError> {
        match m {
            // Process 0 exits once every writer has finished.
            Event::Lost(_) if self.done => Ok(None),
            Event::Lost(reason) => Err(RunError::ClusterStopped { reason }),
            Event::Msg(ToMember::Abort { reason }) => Err(RunError::ClusterStopped { reason }),
            Event::Msg(ToMember::Epochs(list)) => {
                self.backlog.extend(list);
                Ok(None)
            }
            Event::Msg(ToMember::Decided { epoch, log_offset }) => Ok(Some((epoch, log_offset))),
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

    /// Takes what has arrived, without waiting, and passes a stop asked
    /// for here on to the leader.
    pub fn poll(&mut self) -> Result<(), RunError> {
        if self.stop.load(Ordering::SeqCst) && !self.stop_sent {
            self.stop_sent = true;
            self.send(&ToLeader::Stop)?;
        }
        while let Ok(m) = self.rx.try_recv() {
            if let Some((epoch, _)) = self.handle(m)? {
                return Err(RunError::ClusterStopped {
                    reason: format!("epoch {epoch} was decided before this process prepared it; this is a bug in rill"),
                });
            }
        }
        Ok(())
    }

    /// The next epoch the leader named, if any.
    pub fn next_epoch(&mut self) -> Option<u64> {
        self.backlog.pop_front()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Waits until the leader has decided `epoch`; the offset of its
    /// record in the epoch log.
    pub fn await_decision(&mut self, epoch: u64) -> Result<i64, RunError> {
        loop {
            let m = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.poll()?;
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
                Some((e, _)) => {
                    return Err(RunError::ClusterStopped {
                        reason: format!("epoch {e} was decided while this process waited for epoch {epoch}; this is a bug in rill"),
                    })
                }
                None => {}
            }
        }
    }
}
