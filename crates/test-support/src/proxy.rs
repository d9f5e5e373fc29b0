//! A fault-injecting TCP proxy for tests: sits between a client and a real server on
//! loopback and does to the connections what a real network or a crashing server does.
//!
//! - [`Proxy::hold`]: answers from the server are held back (the request did reach the
//!   server and took effect; the client waits for an answer) until [`Proxy::release`]; a test
//!   kills or fills while a change is in flight, deterministically.
//! - [`Proxy::down`]: every open connection is reset (RST) and new ones are refused (the
//!   listening socket is closed) until [`Proxy::up`].
//!
//! Not a fake server: every byte that passes comes from the real one. Protocol-blind.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::LOOPBACK;

/// How often blocked pumps and the acceptor look at the proxy's mode.
const TICK: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Shared {
    /// Answers are held back.
    hold: Mutex<bool>,
    released: Condvar,
    /// Answers held so far (reads from the server not forwarded).
    held: AtomicUsize,
    /// Connections are reset and new ones refused.
    down: AtomicBool,
    /// Bumped by every `down`: pumps of an older generation reset their connection.
    generation: AtomicUsize,
    /// The proxy is dropped.
    closed: AtomicBool,
}

/// A running proxy; stops (and resets its connections) on drop.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Result<Proxy> {
        let listener =
            TcpListener::bind((LOOPBACK, 0)).context("binding the proxy to a free port")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name("test-proxy-accept".into())
            .spawn(move || accept_loop(Some(listener), port, upstream_port, &s))
            .context("starting the proxy")?;
        Ok(Proxy { port, shared })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
    }

    /// Holds back every answer from the server from now on.
    pub fn hold(&self) {
        *self.shared.hold.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// How many answers are held back (each a read from the server).
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` answers are held back (each means a request reached the
    /// server and was answered); fails after `limit` (a deadlock guard, not a timing).
    pub fn wait_held(&self, n: usize, limit: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        while self.held() < n {
            anyhow::ensure!(
                start.elapsed() < limit,
                "the proxy held {} answers, not {n}, within {limit:?}",
                self.held()
            );
            thread::sleep(TICK);
        }
        Ok(())
    }

    /// Forwards what was held back and stops holding.
    pub fn release(&self) {
        *self.shared.hold.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.shared.released.notify_all();
    }

    /// Resets every open connection and refuses new ones (as a server that went away).
    pub fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        self.release();
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.down();
    }
}

/// Accepts while up; closes the listening socket while down (connections are refused) and
/// binds the same port again when up.
fn accept_loop(mut listener: Option<TcpListener>, port: u16, upstream: u16, s: &Arc<Shared>) {
    loop {
        if s.closed.load(Ordering::SeqCst) {
            return;
        }
        if s.down.load(Ordering::SeqCst) {
            listener = None;
            thread::sleep(TICK);
            continue;
        }
        let Some(l) = listener.as_ref() else {
            listener = TcpListener::bind((LOOPBACK, port)).ok();
            if let Some(l) = &listener {
                let _ = l.set_nonblocking(true);
            }
            thread::sleep(TICK);
            continue;
        };
        let _ = l.set_nonblocking(true);
        match l.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                if let Ok(server) = TcpStream::connect((LOOPBACK, upstream)) {
                    connect_pumps(client, server, s);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
}

fn connect_pumps(client: TcpStream, server: TcpStream, s: &Arc<Shared>) {
    let generation = s.generation.load(Ordering::SeqCst);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    for (from, to, answers) in [(client, s2, false), (server, c2, true)] {
        let s = Arc::clone(s);
        let _ = thread::Builder::new()
            .name("test-proxy-pump".into())
            .spawn(move || pump(from, to, answers, generation, &s));
    }
}

/// Copies `from` to `to`; `answers` is the server-to-client direction (the one held back).
/// A `down` resets both sockets (linger 0, then close).
fn pump(mut from: TcpStream, mut to: TcpStream, answers: bool, generation: usize, s: &Shared) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    let reset = |a: &TcpStream, b: &TcpStream| {
        for t in [a, b] {
            let _ = socket2::SockRef::from(t).set_linger(Some(Duration::ZERO));
        }
    };
    loop {
        if s.generation.load(Ordering::SeqCst) != generation {
            reset(&from, &to);
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                reset(&from, &to);
                return;
            }
        };
        if answers && !wait_while_held(s, generation) {
            reset(&from, &to);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Counts an answer held back and waits for the release; `false` if the proxy went down
/// meanwhile.
fn wait_while_held(s: &Shared, generation: usize) -> bool {
    let mut hold = s.hold.lock().unwrap_or_else(|p| p.into_inner());
    if *hold {
        s.held.fetch_add(1, Ordering::SeqCst);
    }
    while *hold {
        if s.generation.load(Ordering::SeqCst) != generation {
            return false;
        }
        hold = match s.released.wait_timeout(hold, TICK) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
    s.generation.load(Ordering::SeqCst) == generation
}
