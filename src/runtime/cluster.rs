//! How the processes of a cluster find each other before timely's own
//! communication takes over. As in timely, process i listens on the i-th
//! address and connects to every lower one; unlike timely, which retries
//! forever and checks nothing, every connection has a deadline and starts
//! with a handshake: the same binary, job file and worker count (a
//! fingerprint), and the same generation (a number each start of the whole
//! cluster changes), so a peer from another build or a process left over
//! from an earlier run is named instead of joining. With a shared secret,
//! each side then proves it knows it (an HMAC of the other's random
//! nonce), so a process that does not is refused. The connected sockets
//! then carry timely's exchange and progress traffic unchanged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::Hooks;

/// The first bytes of a connection: one carrying timely's traffic, or the
/// control connection every process keeps with process 0 (the epoch
/// decisions, stop requests and heartbeats of `runtime/control.rs`).
const MAGIC: &[u8; 8] = b"rill-cl2";
const CONTROL_MAGIC: &[u8; 8] = b"rill-ct2";
const HELLO: usize = 48;

/// The connections of one process of a cluster.
#[derive(Debug)]
pub struct Connected {
    /// One socket per process, none at this one: timely's exchange and
    /// progress traffic.
    pub timely: Vec<Option<TcpStream>>,
    /// Process 0 holds one per other process; the others one, to process 0.
    pub control: Vec<Option<TcpStream>>,
}

/// What every process of one cluster must share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Hash of the binary, the job file and the worker count.
    pub fingerprint: u64,
    /// Changes with every start of the whole cluster.
    pub generation: u64,
    /// SHA-256 of the cluster's shared secret; zeros without one.
    pub key: [u8; 32],
}

impl Identity {
    /// The key of a shared secret (`--cluster-secret-file`).
    pub fn key_of(secret: &[u8]) -> [u8; 32] {
        openssl::sha::sha256(secret)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    #[error("process {process} is out of range: the hostfile lists {count} addresses (processes 0 to {last})", last = count.saturating_sub(1))]
    OutOfRange { process: usize, count: usize },
    #[error(
        "a cluster needs at least two addresses in its hostfile, one per process; it lists {count}"
    )]
    TooFewAddresses { count: usize },
    #[error("address `{address}` of process {process} is not host:port: {reason}")]
    BadAddress {
        process: usize,
        address: String,
        reason: String,
    },
    #[error("process {process} cannot listen on {address}: {reason}; another program holds the port: stop it, or give this process another port in the hostfile")]
    PortTaken {
        process: usize,
        address: String,
        reason: String,
    },
    #[error("process {peer} at {address} did not answer within {timeout_ms} ms: start every process of the cluster (or raise --connect-timeout-ms)")]
    NoAnswer {
        peer: usize,
        address: String,
        timeout_ms: u128,
    },
    #[error("process {peer} at {address} runs another binary, job file or worker count than process {me}: start every process with the same jobctl, job file and --workers")]
    Mismatch {
        me: usize,
        peer: usize,
        address: String,
    },
    #[error("process {peer} at {address} is left over from an earlier run of the cluster (generation {theirs}, this run is {ours}): stop it, then start it again with the others")]
    PeerStale {
        peer: usize,
        address: String,
        theirs: u64,
        ours: u64,
    },
    #[error("this process is left over from an earlier run of the cluster (generation {ours}; process {peer} at {address} runs generation {theirs}): stop it and start it with the others")]
    SelfStale {
        peer: usize,
        address: String,
        theirs: u64,
        ours: u64,
    },
    #[error("process {peer} at {address} does not share this process's cluster secret: start every process with the same --cluster-secret-file (a local cluster's launcher makes one for its processes)")]
    Secret { peer: usize, address: String },
    #[error("process {peer} at {address} answered with something other than a rill cluster handshake: {reason}")]
    Handshake {
        peer: usize,
        address: String,
        reason: String,
    },
}

/// The fingerprint of this process in a cluster running `job` (the job
/// file's text) on `workers` threads per process: a hash of the running
/// binary, the job file and the worker count. Processes that differ in
/// any of them would cut or route records differently.
pub fn fingerprint(job: &[u8], workers: usize) -> std::io::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut binary = std::fs::File::open(std::env::current_exe()?)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = binary.read(&mut buf)?;
        if n == 0 {
            break;
        }
        buf[..n].hash(&mut h);
    }
    job.hash(&mut h);
    workers.hash(&mut h);
    Ok(h.finish())
}

/// One process's hello: magic, index, generation, fingerprint, and the
/// nonce the peer's proof is made of.
fn hello(me: usize, id: Identity, control: bool, nonce: &[u8; 16]) -> [u8; HELLO] {
    let mut out = [0u8; HELLO];
    out[..8].copy_from_slice(if control { CONTROL_MAGIC } else { MAGIC });
    out[8..16].copy_from_slice(&(me as u64).to_be_bytes());
    out[16..24].copy_from_slice(&id.generation.to_be_bytes());
    out[24..32].copy_from_slice(&id.fingerprint.to_be_bytes());
    out[32..].copy_from_slice(nonce);
    out
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    openssl::rand::rand_bytes(&mut n).expect("random bytes from OpenSSL");
    n
}

/// Process `prover`'s proof to process `verifier`, which sent `nonce`,
/// that it knows `key`: HMAC-SHA256 over all three. Both indexes are in
/// it, so that a proof one process gives a stranger is no proof to any
/// other process.
fn proof(key: &[u8; 32], nonce: &[u8; 16], prover: usize, verifier: usize) -> [u8; 32] {
    let pkey = openssl::pkey::PKey::hmac(key).expect("an HMAC key");
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).expect("HMAC");
    signer.update(b"rill-cluster").expect("HMAC");
    signer.update(nonce).expect("HMAC");
    signer.update(&(prover as u64).to_be_bytes()).expect("HMAC");
    signer
        .update(&(verifier as u64).to_be_bytes())
        .expect("HMAC");
    let mut out = [0u8; 32];
    out.copy_from_slice(&signer.sign_to_vec().expect("HMAC"));
    out
}

/// Sends this process's proof, then reads and checks the peer's: Ok(true)
/// when it holds, Ok(false) when the peer does not know the key.
fn prove(
    stream: &mut TcpStream,
    key: &[u8; 32],
    me: usize,
    peer: usize,
    mine: &[u8; 16],
    theirs: &[u8; 16],
) -> std::io::Result<bool> {
    stream.write_all(&proof(key, theirs, me, peer))?;
    let mut got = [0u8; 32];
    stream.read_exact(&mut got)?;
    Ok(openssl::memcmp::eq(&got, &proof(key, mine, peer, me)))
}

/// Reads a peer's hello: (control, index, identity, nonce).
fn read_hello(stream: &mut TcpStream) -> Result<(bool, usize, Identity, [u8; 16]), String> {
    let mut buf = [0u8; HELLO];
    stream.read_exact(&mut buf).map_err(|e| e.to_string())?;
    let control = match &buf[..8] {
        m if m == MAGIC => false,
        m if m == CONTROL_MAGIC => true,
        _ => return Err("unexpected bytes".into()),
    };
    let word = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().unwrap());
    Ok((
        control,
        word(8) as usize,
        Identity {
            generation: word(16),
            fingerprint: word(24),
            // Never sent: each side has its own and proves it.
            key: [0; 32],
        },
        buf[32..].try_into().unwrap(),
    ))
}

/// How a peer's identity compares with ours: Ok, or the error to report.
fn judge(
    me: usize,
    peer: usize,
    address: &str,
    ours: Identity,
    theirs: Identity,
) -> Result<(), ClusterError> {
    let address = address.to_string();
    if theirs.fingerprint != ours.fingerprint {
        return Err(ClusterError::Mismatch { me, peer, address });
    }
    match theirs.generation.cmp(&ours.generation) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(ClusterError::PeerStale {
            peer,
            address,
            theirs: theirs.generation,
            ours: ours.generation,
        }),
        std::cmp::Ordering::Greater => Err(ClusterError::SelfStale {
            peer,
            address,
            theirs: theirs.generation,
            ours: ours.generation,
        }),
    }
}

fn resolve(process: usize, address: &str) -> Result<SocketAddr, ClusterError> {
    let bad = |reason: String| ClusterError::BadAddress {
        process,
        address: address.into(),
        reason,
    };
    address
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("it resolves to no address".into()))
}

/// Connects process `me` to every other process of `addresses`, each
/// after a handshake, within `timeout`: timely's sockets, and the control
/// connections to process 0.
pub fn connect(
    addresses: &[String],
    me: usize,
    id: Identity,
    timeout: Duration,
) -> Result<Connected, ClusterError> {
    if addresses.len() < 2 {
        return Err(ClusterError::TooFewAddresses {
            count: addresses.len(),
        });
    }
    if me >= addresses.len() {
        return Err(ClusterError::OutOfRange {
            process: me,
            count: addresses.len(),
        });
    }
    let resolved: Vec<SocketAddr> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| resolve(i, a))
        .collect::<Result<_, _>>()?;
    let listener = TcpListener::bind(resolved[me]).map_err(|e| ClusterError::PortTaken {
        process: me,
        address: addresses[me].clone(),
        reason: e.to_string(),
    })?;
    let deadline = Instant::now() + timeout;
    let n = addresses.len();
    let mut sockets: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut control: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    // Lower processes: connect, retrying until the deadline. A stale peer
    // may still hold the address; the right one may yet come.
    let dial = |peer: usize, kind: bool| -> Result<TcpStream, ClusterError> {
        let mut last_refusal = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last_refusal.unwrap_or(ClusterError::NoAnswer {
                    peer,
                    address: addresses[peer].clone(),
                    timeout_ms: timeout.as_millis(),
                }));
            }
            let Ok(mut stream) = TcpStream::connect_timeout(&resolved[peer], left) else {
                std::thread::sleep(Duration::from_millis(50).min(left));
                continue;
            };
            let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mine = nonce();
            let _ = stream.write_all(&hello(me, id, kind, &mine));
            match read_hello(&mut stream) {
                Ok((_, index, theirs, their_nonce)) if index == peer => {
                    match judge(me, peer, &addresses[peer], id, theirs) {
                        Ok(()) => {
                            match prove(&mut stream, &id.key, me, peer, &mine, &their_nonce) {
                                Ok(true) => return Ok(stream),
                                Ok(false) => {
                                    return Err(ClusterError::Secret {
                                        peer,
                                        address: addresses[peer].clone(),
                                    })
                                }
                                // Closed by a peer that refused us: try again.
                                Err(_) => std::thread::sleep(Duration::from_millis(50)),
                            }
                        }
                        Err(e @ ClusterError::PeerStale { .. }) => last_refusal = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Ok((_, index, _, _)) => {
                    return Err(ClusterError::Handshake {
                        peer,
                        address: addresses[peer].clone(),
                        reason: format!(
                            "it says it is process {index}: check the hostfile's order"
                        ),
                    })
                }
                // Closed by a peer that refused us: try again.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    for peer in 0..me {
        sockets[peer] = Some(dial(peer, false)?);
        if peer == 0 {
            control[0] = Some(dial(0, true)?);
        }
    }
    // Higher processes connect to us; process 0 takes their control
    // connections too.
    listener
        .set_nonblocking(true)
        .expect("a listening socket can be made non-blocking");
    let mut refused: Vec<Option<ClusterError>> = (0..n).map(|_| None).collect();
    let missing = |sockets: &[Option<TcpStream>], control: &[Option<TcpStream>]| {
        (me + 1..n).find(|i| sockets[*i].is_none() || (me == 0 && control[*i].is_none()))
    };
    while let Some(peer) = missing(&sockets, &control) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(refused[peer].take().unwrap_or(ClusterError::NoAnswer {
                peer,
                address: addresses[peer].clone(),
                timeout_ms: timeout.as_millis(),
            }));
        }
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(_) => continue,
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let Ok((kind, peer, theirs, their_nonce)) = read_hello(&mut stream) else {
            continue;
        };
        // Answer first, so a refused peer learns why on its side too.
        let mine = nonce();
        let _ = stream.write_all(&hello(me, id, kind, &mine));
        if peer <= me || peer >= n || (kind && me != 0) {
            continue;
        }
        let judged = judge(me, peer, &addresses[peer], id, theirs).and_then(|()| {
            match prove(&mut stream, &id.key, me, peer, &mine, &their_nonce) {
                Ok(true) => Ok(()),
                // A stranger's connection is dropped; the start waits for
                // the process that knows the secret, and names this if
                // none comes.
                _ => Err(ClusterError::Secret {
                    peer,
                    address: addresses[peer].clone(),
                }),
            }
        });
        match judged {
            Err(e @ ClusterError::Secret { .. }) => refused[peer] = Some(e),
            Ok(()) if kind => control[peer] = Some(stream),
            Ok(()) => sockets[peer] = Some(stream),
            Err(e @ ClusterError::PeerStale { .. }) => refused[peer] = Some(e),
            Err(e) => return Err(e),
        }
    }
    for s in sockets.iter().chain(&control).flatten() {
        let _ = s.set_read_timeout(None);
        let _ = s.set_nodelay(true);
    }
    Ok(Connected {
        timely: sockets,
        control,
    })
}

/// Runs `func` on `threads` worker threads of this process, joined with the
/// other processes over `sockets` (from [`connect`]) into one timely
/// computation.
pub fn execute<T, F>(
    sockets: Vec<Option<TcpStream>>,
    me: usize,
    threads: usize,
    func: F,
) -> Result<timely::communication::WorkerGuards<T>, String>
where
    T: Send + 'static,
    F: Fn(&mut timely::worker::Worker) -> T + Send + Sync + 'static,
{
    let hooks = Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
    let sockets = crate::fault::data_links(sockets);
    let (builders, guard) = initialize_networking_from_sockets(local, sockets, me, threads, hooks)
        .map_err(|e| format!("cannot start the cluster's communication: {e}"))?;
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    timely::execute::execute_from(
        builders,
        Box::new(guard),
        timely::WorkerConfig::default(),
        func,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::{Exchange, Inspect, ToStream};

    fn free_addresses(n: usize) -> Vec<String> {
        let held: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        held.iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect()
    }

    const ID: Identity = Identity {
        fingerprint: 7,
        generation: 1,
        key: [0; 32],
    };

    fn start(
        addresses: &[String],
        me: usize,
        id: Identity,
        timeout_ms: u64,
    ) -> std::thread::JoinHandle<Result<Connected, ClusterError>> {
        let addresses = addresses.to_vec();
        std::thread::spawn(move || connect(&addresses, me, id, Duration::from_millis(timeout_ms)))
    }

    #[test]
    fn the_fingerprint_follows_the_job_file_and_the_worker_count() {
        let a = fingerprint(b"[job]\nname = \"a\"", 2).unwrap();
        assert_eq!(a, fingerprint(b"[job]\nname = \"a\"", 2).unwrap());
        assert_ne!(a, fingerprint(b"[job]\nname = \"b\"", 2).unwrap());
        assert_ne!(a, fingerprint(b"[job]\nname = \"a\"", 3).unwrap());
    }

    #[test]
    fn two_processes_form_one_timely_computation() {
        let addresses = free_addresses(2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let procs: Vec<_> = (0..2)
            .map(|me| {
                let (addresses, seen) = (addresses.clone(), seen.clone());
                std::thread::spawn(move || {
                    let connected = connect(&addresses, me, ID, Duration::from_secs(10)).unwrap();
                    assert_eq!(connected.control.iter().flatten().count(), 1);
                    let guards = execute(connected.timely, me, 1, move |worker| {
                        let index = worker.index();
                        let seen = seen.clone();
                        worker.dataflow::<u64, _, _>(|scope| {
                            (0..10u64)
                                .map(move |x| x * 2 + index as u64)
                                .to_stream(scope)
                                .container::<Vec<_>>()
                                .exchange(|x| *x)
                                .inspect(move |x| seen.lock().unwrap().push((index, *x)));
                        });
                    })
                    .unwrap();
                    drop(guards);
                })
            })
            .collect();
        for p in procs {
            p.join().unwrap();
        }
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        // Every record of both processes, each on the worker its value picks.
        assert_eq!(seen.len(), 20);
        assert!(seen.iter().all(|(w, x)| *x as usize % 2 == *w));
    }

    #[test]
    fn a_peer_that_never_starts_is_named_after_the_timeout() {
        let addresses = free_addresses(2);
        let err = start(&addresses, 0, ID, 300).join().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("process 1 at {} did not answer within 300 ms: start every process of the cluster (or raise --connect-timeout-ms)", addresses[1])
        );
        let err = start(&addresses, 1, ID, 300).join().unwrap().unwrap_err();
        assert!(
            matches!(err, ClusterError::NoAnswer { peer: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn another_binary_or_job_file_is_refused_on_both_sides() {
        let addresses = free_addresses(2);
        let other = Identity {
            fingerprint: 8,
            ..ID
        };
        let a = start(&addresses, 0, ID, 3000);
        let b = start(&addresses, 1, other, 3000);
        for (r, me, peer) in [(a.join().unwrap(), 0, 1), (b.join().unwrap(), 1, 0)] {
            let err = r.unwrap_err();
            assert_eq!(
                err,
                ClusterError::Mismatch {
                    me,
                    peer,
                    address: addresses[peer].clone()
                }
            );
        }
    }

    #[test]
    fn a_process_without_the_clusters_secret_is_refused_and_the_one_with_it_joins() {
        let addresses = free_addresses(2);
        let secret = Identity {
            key: Identity::key_of(b"the cluster's secret"),
            ..ID
        };
        let zero = start(&addresses, 0, secret, 5000);
        // Without the secret, or with another: refused on the side that
        // dials, while process 0 waits on for the right one.
        for key in [[0; 32], Identity::key_of(b"a guess")] {
            let stranger = start(&addresses, 1, Identity { key, ..ID }, 5000)
                .join()
                .unwrap()
                .unwrap_err();
            assert_eq!(
                stranger,
                ClusterError::Secret {
                    peer: 0,
                    address: addresses[0].clone()
                }
            );
        }
        let one = start(&addresses, 1, secret, 5000);
        assert!(zero.join().unwrap().is_ok());
        assert!(one.join().unwrap().is_ok());
        // A process 0 that waits in vain names the refusal, not a silence.
        let addresses = free_addresses(2);
        let zero = start(&addresses, 0, secret, 1500);
        let _ = start(&addresses, 1, ID, 1000).join().unwrap();
        assert_eq!(
            zero.join().unwrap().unwrap_err(),
            ClusterError::Secret {
                peer: 1,
                address: addresses[1].clone()
            }
        );
    }

    #[test]
    fn a_process_of_an_earlier_run_is_told_so_and_the_right_one_still_joins() {
        let addresses = free_addresses(2);
        let new = Identity {
            generation: 2,
            ..ID
        };
        let zero = start(&addresses, 0, new, 5000);
        // A process 1 of generation 1 comes first and is turned away.
        let stale = start(&addresses, 1, ID, 5000).join().unwrap().unwrap_err();
        assert_eq!(
            stale.to_string(),
            format!("this process is left over from an earlier run of the cluster (generation 1; process 0 at {} runs generation 2): stop it and start it with the others", addresses[0])
        );
        let one = start(&addresses, 1, new, 5000);
        assert!(zero.join().unwrap().is_ok());
        assert!(one.join().unwrap().is_ok());
    }

    #[test]
    fn a_port_in_use_and_a_bad_hostfile_say_what_to_do() {
        let addresses = free_addresses(2);
        let _holder = TcpListener::bind(&addresses[0]).unwrap();
        let err = connect(&addresses, 0, ID, Duration::from_millis(100)).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "process 0 cannot listen on {}: ",
                addresses[0]
            )) && err.to_string().ends_with("another program holds the port: stop it, or give this process another port in the hostfile"),
            "{err}"
        );
        assert_eq!(
            connect(&addresses, 2, ID, Duration::from_millis(100))
                .unwrap_err()
                .to_string(),
            "process 2 is out of range: the hostfile lists 2 addresses (processes 0 to 1)"
        );
        assert_eq!(
            connect(&addresses[..1], 0, ID, Duration::from_millis(100))
                .unwrap_err()
                .to_string(),
            "a cluster needs at least two addresses in its hostfile, one per process; it lists 1"
        );
    }
}
