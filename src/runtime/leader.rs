//! Process 0's leader thread: it hears every process of the cluster.
//! Each reports the epochs it has finished; the leader names, in order,
//! those that hold something in any process, so that every writer takes
//! part in the same epochs. It passes on to process 0's writer that the
//! others have prepared an epoch (with their dead letters and changelog
//! records, which that writer sends) and have committed it, spreads a
//! stop asked for anywhere, and stops the whole cluster, naming the
//! process, when one is lost.

use super::control::{Event, Link, Share, ToLeader, ToMember};
use super::error::RunError;
use super::liveness::Stall;
use super::member::{PeerEvent, PreparedShare};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub struct Leader {
    /// To every process, process 0 first.
    links: Vec<Link<ToMember>>,
    rx: Receiver<(usize, Event<ToLeader>)>,
    /// To process 0's writer.
    peers: Sender<(usize, PeerEvent)>,
    /// Per process, every epoch below this is finished there.
    upto: Vec<u64>,
    /// Epochs that hold something in some process, not yet named.
    active: BTreeSet<u64>,
    /// Epochs logged before the restart: named whatever they hold.
    replay: BTreeSet<u64>,
    /// Epochs below this are named.
    named_upto: u64,
    shares: Vec<Option<Share>>,
    stop_sent: bool,
    stall: Stall,
}

impl Leader {
    pub fn new(
        links: Vec<Link<ToMember>>,
        rx: Receiver<(usize, Event<ToLeader>)>,
        peers: Sender<(usize, PeerEvent)>,
        replay: impl IntoIterator<Item = u64>,
        stall: Stall,
    ) -> Self {
        let n = links.len();
        Leader {
            links,
            rx,
            peers,
            upto: vec![0; n],
            active: BTreeSet::new(),
            replay: replay.into_iter().collect(),
            named_upto: 0,
            shares: vec![None; n],
            stop_sent: false,
            stall,
        }
    }

    fn broadcast(&self, m: &ToMember) {
        for l in &self.links {
            l.send(m);
        }
    }

    /// Serves until every process has finished: what each did beyond its
    /// epochs' counts.
    pub fn run(mut self) -> Result<Vec<Share>, RunError> {
        let result = self.serve();
        if let Err(e) = &result {
            let reason = match e {
                RunError::ClusterStopped { reason } => reason.clone(),
                e => e.to_string(),
            };
            let _ = self.peers.send((0, PeerEvent::Lost(reason.clone())));
            self.broadcast(&ToMember::Abort { reason });
        }
        result?;
        Ok(self.shares.into_iter().flatten().collect())
    }

    fn serve(&mut self) -> Result<(), RunError> {
        loop {
            if let Some(reason) = self.stall.verdict(Instant::now()) {
                return Err(RunError::ClusterStopped { reason });
            }
            let (from, event) = match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RunError::ClusterStopped {
                        reason: "every control connection closed".into(),
                    })
                }
            };
            let m = match event {
                Event::Lost(reason) => {
                    return Err(RunError::ClusterStopped {
                        reason: format!("process {from} was lost: {reason}"),
                    })
                }
                Event::Msg(m) => m,
            };
            match m {
                ToLeader::Frontier { upto, active } => {
                    self.upto[from] = self.upto[from].max(upto);
                    self.active.extend(active);
                    self.name_epochs();
                }
                ToLeader::Prepared {
                    epoch,
                    read,
                    waiting,
                    report,
                    share,
                } => {
                    let share = PreparedShare {
                        read: read
                            .into_iter()
                            .map(|(s, p, a, b)| ((s, p), (a, b)))
                            .collect(),
                        waiting,
                        report,
                        share,
                    };
                    let _ = self
                        .peers
                        .send((from, PeerEvent::Prepared(epoch, Box::new(share))));
                }
                ToLeader::Written { epoch } => {
                    let _ = self.peers.send((from, PeerEvent::Written(epoch)));
                }
                ToLeader::Stop if !self.stop_sent => {
                    self.stop_sent = true;
                    self.broadcast(&ToMember::Stop);
                }
                ToLeader::Finished { share } => {
                    self.shares[from] = Some(share);
                    if self.shares.iter().all(Option::is_some) {
                        self.broadcast(&ToMember::Done);
                        return Ok(());
                    }
                }
                ToLeader::Pulse { frontier, waiting } => {
                    self.stall.pulse(Instant::now(), from, frontier, waiting);
                }
                ToLeader::Stop | ToLeader::Heartbeat => {}
            }
        }
    }

    /// Names the epochs every process has finished that hold something
    /// somewhere, or were logged before the restart.
    fn name_epochs(&mut self) {
        let upto = *self.upto.iter().min().unwrap();
        if upto <= self.named_upto {
            return;
        }
        let range = self.named_upto..upto;
        let mut named: BTreeSet<u64> = self.active.range(range.clone()).copied().collect();
        named.extend(self.replay.range(range));
        self.active = self.active.split_off(&upto);
        self.named_upto = upto;
        self.broadcast(&ToMember::Epochs {
            list: named.into_iter().collect(),
            upto,
        });
    }
}
