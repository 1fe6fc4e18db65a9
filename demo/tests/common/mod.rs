//! A minimal OTLP/HTTP receiver for tests: accepts `POST /v1/traces` (protobuf), answers 200 with an empty
//! `ExportTraceServiceResponse`, and keeps every body. No decoding: tests look for raw trace-id bytes and
//! service names in the protobuf, which is enough to tell which spans arrived.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request: its path and body.
type Request = (String, Vec<u8>);

/// Bodies received, with their request paths.
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<Request>>>);

impl Received {
    /// Whether any `/v1/traces` body contains `needle`.
    pub fn any_contains(&self, needle: &[u8]) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(path, b)| path == "/v1/traces" && b.windows(needle.len()).any(|w| w == needle))
    }

    /// Whether one `/v1/traces` body contains all of `needles`.
    pub fn one_contains_all(&self, needles: &[&[u8]]) -> bool {
        let has = |b: &[u8], n: &[u8]| b.windows(n.len()).any(|w| w == n);
        self.0.lock().unwrap().iter().any(|(path, b)| path == "/v1/traces" && needles.iter().all(|n| has(b, n)))
    }

    /// Number of requests.
    pub fn requests(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Starts the receiver on a free port; returns its endpoint (`http://127.0.0.1:PORT`) and the bodies.
pub fn otlp_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let r = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let r = r.clone();
            std::thread::spawn(move || serve(stream, &r));
        }
    });
    (endpoint, received)
}

fn serve(stream: TcpStream, received: &Received) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        received.0.lock().unwrap().push((path, body));
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// 32 hex digits to 16 bytes.
pub fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}
