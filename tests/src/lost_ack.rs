//! A TCP relay in front of ClickHouse that loses the answer to the first
//! INSERT it carries: the request reaches ClickHouse, which stores the
//! batch, and the client hears nothing until the test releases it, when its
//! connection is closed without a word. That is an acknowledgement lost to
//! a timeout, a proxy or a network partition: the writer cannot know
//! whether its batch is stored.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The relay; it runs until the process ends.
#[derive(Debug)]
pub struct LostAck {
    url: String,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// An INSERT has been seen: its connection loses its answer.
    armed: AtomicBool,
    /// ClickHouse has answered that INSERT (and the answer was dropped).
    answered: AtomicBool,
    /// The test lets the client's connection close.
    released: AtomicBool,
    /// INSERTs whose request names this are passed on with their answers.
    spared: Option<&'static [u8]>,
}

impl LostAck {
    /// Relay to `upstream` (`http://host:port`) from a free local port.
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        Self::start_sparing(upstream, None)
    }

    /// Like [`LostAck::start`], but the lost answer is that of the first
    /// INSERT whose request does not name `spared` (e.g. a table).
    pub fn start_sparing(upstream: &str, spared: Option<&'static str>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let state = Arc::new(State {
            spared: spared.map(str::as_bytes),
            ..State::default()
        });
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                let upstream = upstream.clone();
                thread::spawn(move || {
                    if let Ok(server) = TcpStream::connect(&upstream) {
                        relay(client, server, &state);
                    }
                });
            }
        });
        Ok(Self { url, state })
    }

    /// The URL to give the writer.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Wait until ClickHouse has answered the INSERT whose answer is lost.
    pub fn wait_until_answered(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.state.answered.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Close the connection whose answer was lost.
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }
}

fn relay(client: TcpStream, server: TcpStream, state: &Arc<State>) {
    let losing = Arc::new(AtomicBool::new(false));
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream_losing = Arc::clone(&losing);
    let upstream_state = Arc::clone(state);
    // Requests: passed on; the first one naming INSERT (and not the spared name) marks this
    // connection as the one whose answer is lost.
    thread::spawn(move || {
        let mut buffer = [0u8; 64 * 1024];
        while let Ok(n) = from_client.read(&mut buffer) {
            if n == 0 {
                break;
            }
            let names = |word: &[u8]| buffer[..n].windows(word.len()).any(|w| w == word);
            let spared = upstream_state.spared.is_some_and(names);
            if names(b"INSERT")
                && !spared
                && upstream_state
                    .armed
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                upstream_losing.store(true, Ordering::SeqCst);
            }
            if to_server.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    // Answers: passed on, except on the losing connection, where they are
    // dropped until the test releases it; then both sides are closed.
    let (mut from_server, mut to_client) = (server, client);
    let mut buffer = [0u8; 64 * 1024];
    while let Ok(n) = from_server.read(&mut buffer) {
        if n == 0 {
            break;
        }
        if losing.load(Ordering::SeqCst) {
            state.answered.store(true, Ordering::SeqCst);
            while !state.released.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
            break;
        }
        if to_client.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_server.shutdown(Shutdown::Both);
}
