//! What the job's page draws over the last minutes: one sample a second of
//! records per node, end-to-end latency (a record's timestamp to the
//! commit of its epoch), commit time, lag per source, state size and
//! backpressure. Kept in memory by the observer, served as
//! `GET /api/v1/history`.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Seconds of samples kept.
pub const KEPT_S: u64 = 600;

/// One second of the job, as `GET /api/v1/history` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub t: u64,
    /// Records through each node in the epochs committed in this second.
    pub records: BTreeMap<String, u64>,
    /// Of the records committed in this second, sampled: how long after
    /// their timestamp their epoch committed.
    pub latency_p50_ms: Option<i64>,
    pub latency_p99_ms: Option<i64>,
    /// The longest commit of an epoch that ended in this second.
    pub commit_ms: Option<u64>,
    /// Records each source is behind its end, as last measured.
    pub lag: BTreeMap<String, i64>,
    /// Keys every stateful transform holds, as last reported.
    pub state_keys: Option<u64>,
    /// The share of this second the sources waited for the writer to make
    /// room: 0 when nothing pushes back, 1 when reading stopped for all of
    /// it.
    pub backpressure: f64,
    #[serde(skip)]
    latencies: Vec<i64>,
}

#[derive(Default)]
pub struct History {
    samples: VecDeque<Sample>,
    lag: BTreeMap<String, i64>,
    state_keys: Option<u64>,
}

impl History {
    /// The sample of second `t`, made if it is new; samples older than
    /// `KEPT_S` go.
    fn at(&mut self, t: u64) -> &mut Sample {
        if self.samples.back().is_none_or(|s| s.t < t) {
            // A finished second keeps its quantiles, not the latencies
            // they came from: at short epochs those are thousands a second.
            if let Some(done) = self.samples.back_mut() {
                done.latencies = Vec::new();
            }
            let sample = Sample {
                t,
                lag: self.lag.clone(),
                state_keys: self.state_keys,
                ..Sample::default()
            };
            self.samples.push_back(sample);
            while self.samples.front().is_some_and(|s| s.t + KEPT_S <= t) {
                self.samples.pop_front();
            }
        }
        // A clock set back writes into the newest sample.
        self.samples.back_mut().expect("pushed above")
    }

    /// An epoch committed at `now_ms`: its records per node, its commit
    /// time, and a sample of its records' timestamps.
    pub fn committed(
        &mut self,
        now_ms: i64,
        nodes: &[(String, u64)],
        commit_ms: u64,
        timestamps: &[i64],
    ) {
        let s = self.at((now_ms / 1000) as u64);
        for (node, n) in nodes {
            *s.records.entry(node.clone()).or_default() += n;
        }
        s.commit_ms = Some(s.commit_ms.map_or(commit_ms, |c| c.max(commit_ms)));
        s.latencies
            .extend(timestamps.iter().map(|ts| (now_ms - ts).max(0)));
        s.latencies.sort_unstable();
        s.latency_p50_ms = quantile(&s.latencies, 0.5);
        s.latency_p99_ms = quantile(&s.latencies, 0.99);
    }

    /// The sources waited `waited_ns` for the writer since the last call.
    pub fn blocked(&mut self, now_ms: i64, waited_ns: u64) {
        let s = self.at((now_ms / 1000) as u64);
        s.backpressure = (s.backpressure + waited_ns as f64 / 1e9).min(1.0);
    }

    pub fn lag(&mut self, now_ms: i64, per_source: BTreeMap<String, i64>) {
        self.lag = per_source.clone();
        self.at((now_ms / 1000) as u64).lag = per_source;
    }

    pub fn state_keys(&mut self, now_ms: i64, keys: u64) {
        self.state_keys = Some(keys);
        self.at((now_ms / 1000) as u64).state_keys = Some(keys);
    }

    /// Every whole second of the last `KEPT_S` before `now_ms`, oldest
    /// first (the second under way would show a drop that is not there); a
    /// second in which nothing happened is a sample of its own, with no
    /// records, so that a chart shows the job idle rather than skipping.
    pub fn samples(&self, now_ms: i64) -> Vec<Sample> {
        let Some(now) = ((now_ms / 1000) as u64).checked_sub(1) else {
            return Vec::new();
        };
        let Some(first) = self
            .samples
            .front()
            .map(|s| s.t.max(now.saturating_sub(KEPT_S - 1)))
        else {
            return Vec::new();
        };
        let mut kept = self.samples.iter().filter(|s| s.t >= first).peekable();
        let mut out = Vec::new();
        let (mut lag, mut keys) = (BTreeMap::new(), None);
        for t in first..=now.max(first) {
            match kept.next_if(|s| s.t == t) {
                Some(s) => {
                    lag = s.lag.clone();
                    keys = s.state_keys;
                    out.push(s.clone());
                }
                None => out.push(Sample {
                    t,
                    lag: lag.clone(),
                    state_keys: keys,
                    ..Sample::default()
                }),
            }
        }
        out
    }
}

fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_second_holds_its_epochs_latency_quantiles_and_the_last_lag_and_state() {
        let mut h = History::default();
        let nodes = vec![("sources.t".to_string(), 100u64)];
        // Records stamped 1,000 to 1,099 ms committed at 2,000 and 2,500.
        let stamps: Vec<i64> = (1000..1100).collect();
        h.committed(2_000, &nodes, 12, &stamps[..50]);
        h.committed(2_500, &nodes, 30, &stamps[50..]);
        h.lag(2_600, BTreeMap::from([("t".to_string(), 7)]));
        h.state_keys(2_700, 40);
        h.blocked(2_800, 250_000_000);
        h.committed(4_100, &nodes, 5, &[4_000]);
        let s = h.samples(6_000);
        assert_eq!(s.iter().map(|s| s.t).collect::<Vec<_>>(), [2, 3, 4, 5]);
        assert_eq!(s[0].records["sources.t"], 200);
        assert_eq!(s[0].commit_ms, Some(30));
        // Latencies 951..=1000 and 1401..=1450: the middle one and the
        // 99th of a hundred.
        assert_eq!(s[0].latency_p50_ms, Some(1401));
        assert_eq!(s[0].latency_p99_ms, Some(1449));
        assert_eq!(s[0].backpressure, 0.25);
        // A second without commits shows nothing through, and the lag and
        // state as they last were.
        assert!(s[1].records.is_empty() && s[1].latency_p99_ms.is_none());
        assert_eq!(s[1].lag["t"], 7);
        assert_eq!(s[1].state_keys, Some(40));
        assert_eq!(s[2].latency_p50_ms, Some(100));
        assert_eq!(s[3].state_keys, Some(40));
        assert!(
            h.samples[0].latencies.is_empty(),
            "a finished second's latencies are freed"
        );
    }

    #[test]
    fn samples_older_than_ten_minutes_go() {
        let mut h = History::default();
        h.committed(1_000, &[], 1, &[]);
        h.committed(300_000, &[], 2, &[]);
        h.committed(1_000 + KEPT_S as i64 * 1000, &[], 3, &[]);
        let s = h.samples(2_000 + KEPT_S as i64 * 1000);
        // From the oldest second kept (300) to the last whole one (601).
        assert_eq!(s.len(), 302);
        assert_eq!(s[0].commit_ms, Some(2));
        assert_eq!(s.last().unwrap().commit_ms, Some(3));
        assert!(s.iter().all(|x| x.commit_ms != Some(1)));
        // Asked later, only the last ten minutes.
        assert_eq!(h.samples(2_000_000).len(), KEPT_S as usize);
        assert_eq!(h.samples(2_000_000).last().unwrap().t, 1999);
    }
}
