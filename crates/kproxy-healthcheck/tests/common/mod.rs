//! A minimal HTTP/1.1 client over a raw TCP connection, so that tests see the exact bytes
//! the servers send.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// Every value of the header `name` (lower-case).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of the header `name`; panics when it is missing or repeated.
    pub fn header(&self, name: &str) -> &str {
        match self.header_values(name)[..] {
            [value] => value,
            ref other => panic!("header {name}: expected one value, got {other:?}"),
        }
    }
}

/// Sends `method path` with `Connection: close` and reads the whole response.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> io::Result<Reply> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    Ok(parse(&String::from_utf8(raw).expect("UTF-8 response")))
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Parses one complete response.
pub fn parse(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").expect("end of headers");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts
        .next()
        .expect("status code")
        .parse()
        .expect("numeric status");
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Whether connecting to `addr` is refused (nothing listens there).
pub async fn refused(addr: SocketAddr) -> bool {
    match TcpStream::connect(addr).await {
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => true,
        Err(e) => panic!("connect {addr}: unexpected error {e}"),
    }
}
