//! `pgward healthcheck`: the probe a container runtime or a supervisor runs, so the image needs
//! no curl. It asks the admin endpoint's `GET /healthz` (200 only when PostgreSQL answers behind
//! this instance); with the admin endpoint disabled it can only check that the client listener
//! accepts a connection. Blocking std I/O with timeouts: one request, then the process exits.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use thiserror::Error;

use crate::config::Config;

/// Why the instance is not healthy (or could not be asked).
#[derive(Debug, Error)]
pub enum Unhealthy {
    #[error("{what} {addr:?} is not an IP:port address")]
    Address { what: &'static str, addr: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("GET /healthz on {addr} answered: {status}")]
    Status { addr: SocketAddr, status: String },
}

/// What was probed, for the success line.
#[derive(Debug, PartialEq, Eq)]
pub enum Probed {
    /// `GET /healthz` answered 200.
    Admin(SocketAddr),
    /// The client listener accepted a TCP connection (admin endpoint disabled).
    Listener(SocketAddr),
}

/// Probes the instance `config` describes, each step bounded by `timeout`.
pub fn probe(config: &Config, timeout: Duration) -> Result<Probed, Unhealthy> {
    if config.admin.listen.is_empty() {
        let addr = reachable("listen", &config.server.listen)?;
        connect(addr, timeout)?;
        return Ok(Probed::Listener(addr));
    }
    let addr = reachable("admin.listen", &config.admin.listen)?;
    let mut stream = connect(addr, timeout)?;
    let io = |source| Unhealthy::Io { addr, source };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // An IP literal as Host: the admin guard accepts it whatever admin.allowed_hosts says.
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: pgward-healthcheck\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all that matters; a small bounded read holds it.
    let mut head = [0u8; 256];
    let mut len = 0;
    while len < head.len() {
        let Some(rest) = head.get_mut(len..) else {
            break;
        };
        let n = stream.read(rest).map_err(io)?;
        if n == 0 {
            break;
        }
        len = len.saturating_add(n);
        if head.get(..len).is_some_and(|h| h.contains(&b'\n')) {
            break;
        }
    }
    let text = String::from_utf8_lossy(head.get(..len).unwrap_or_default());
    let status = text.lines().next().unwrap_or("").trim().to_owned();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(Probed::Admin(addr)),
        _ if status.is_empty() => Err(Unhealthy::Status {
            addr,
            status: "no HTTP answer".into(),
        }),
        _ => Err(Unhealthy::Status { addr, status }),
    }
}

/// The address to dial for a listen address: a wildcard (0.0.0.0, ::) is reached on loopback.
fn reachable(what: &'static str, listen: &str) -> Result<SocketAddr, Unhealthy> {
    let mut addr: SocketAddr = listen.parse().map_err(|_| Unhealthy::Address {
        what,
        addr: listen.to_owned(),
    })?;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    Ok(addr)
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Unhealthy> {
    TcpStream::connect_timeout(&addr, timeout).map_err(|source| Unhealthy::Connect { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_probed_on_loopback() {
        let v4 = reachable("listen", "0.0.0.0:6480").unwrap();
        assert_eq!(v4, "127.0.0.1:6480".parse().unwrap());
        let v6 = reachable("listen", "[::]:6480").unwrap();
        assert_eq!(v6, "[::1]:6480".parse().unwrap());
        assert!(reachable("listen", "nope").is_err());
    }

    #[test]
    fn a_closed_port_is_unhealthy() {
        // Bound then dropped: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut config = Config::default();
        config.admin.listen = format!("127.0.0.1:{port}");
        let e = probe(&config, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(e, Unhealthy::Connect { .. }), "{e}");
    }
}
