//! `[[listeners]]`: MQTT listeners beside `[listener]`'s plain TCP one, each with its
//! own address and transport. What can be checked without reading a file is checked
//! here; the certificate files are read at start (`tls.rs`), also exiting 2 naming
//! the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraListener {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What carries MQTT on it.
    #[serde(default)]
    pub transport: Transport,
    /// The server's certificate chain, PEM (TLS).
    pub cert: Option<PathBuf>,
    /// The server's private key, PEM (TLS).
    pub key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate this CA (PEM) vouches for.
    pub client_ca: Option<PathBuf>,
    /// WebSockets: the HTTP path of the upgrade (default `/mqtt`).
    pub path: Option<String>,
    /// Mutual TLS: the client certificate's common name (CN) is the client's user
    /// name, in place of the one it sends (and no password is asked).
    #[serde(default)]
    pub use_cn_as_username: bool,
}

impl ExtraListener {
    /// The WebSocket path: `path`, or `/mqtt`.
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/mqtt")
    }
}

/// What carries MQTT on a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP.
    #[default]
    Tcp,
    /// TLS 1.2 or 1.3 over TCP.
    Tls,
    /// MQTT over WebSockets.
    Ws,
    /// MQTT over WebSockets over TLS.
    Wss,
}

impl Transport {
    /// As the configuration names it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// Why `listeners` cannot run beside `[listener] addr` (`main`), naming the entry
/// (1-based, as the file lists them) and the key.
pub fn check(listeners: &[ExtraListener], main: SocketAddr) -> Result<(), String> {
    let mut seen = vec![main];
    for (i, l) in listeners.iter().enumerate() {
        let at = format!("[[listeners]] #{} ({})", i + 1, l.addr);
        // (Port 0: a port the system picks, a different one each time.)
        if l.addr.port() != 0 && seen.contains(&l.addr) {
            return Err(format!("{at} addr: already taken by another listener"));
        }
        seen.push(l.addr);
        let tls = matches!(l.transport, Transport::Tls | Transport::Wss);
        let name = l.transport.name();
        if tls && (l.cert.is_none() || l.key.is_none()) {
            return Err(format!("{at}: transport = \"{name}\" needs cert and key"));
        }
        if !tls && (l.cert.is_some() || l.key.is_some() || l.client_ca.is_some()) {
            return Err(format!(
                "{at}: cert, key and client_ca are for transport = \"tls\" or \"wss\""
            ));
        }
        if l.use_cn_as_username && (!tls || l.client_ca.is_none()) {
            return Err(format!(
                "{at} use_cn_as_username: needs mutual TLS (transport \"tls\" or \"wss\" \
                 with client_ca)"
            ));
        }
        let ws = matches!(l.transport, Transport::Ws | Transport::Wss);
        match &l.path {
            Some(_) if !ws => return Err(format!("{at} path: for transport = \"ws\" or \"wss\"")),
            Some(p) if !p.starts_with('/') => {
                return Err(format!("{at} path: {p:?} does not start with /"))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(toml_text: &str) -> ExtraListener {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
    }

    const MAIN: &str = "127.0.0.1:1883";

    /// `l` as a TLS listener without a client CA.
    fn tls_like(l: &ExtraListener) -> ExtraListener {
        ExtraListener {
            transport: Transport::Tls,
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..l.clone()
        }
    }

    #[test]
    fn tls_needs_a_cert_and_a_key_and_tcp_takes_neither() {
        let main: SocketAddr = MAIN.parse().unwrap_or_else(|e| panic!("{e}"));
        let tls = listener(
            "addr = \"127.0.0.1:8883\"\ntransport = \"tls\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        );
        assert_eq!(check(std::slice::from_ref(&tls), main), Ok(()));
        let no_key = ExtraListener {
            key: None,
            ..tls.clone()
        };
        assert!(check(&[no_key], main)
            .unwrap_err()
            .contains("#1 (127.0.0.1:8883): transport = \"tls\" needs cert and key"));
        let tcp_with_cert = ExtraListener {
            transport: Transport::Tcp,
            ..tls.clone()
        };
        assert!(check(&[tcp_with_cert], main)
            .unwrap_err()
            .contains("are for transport = \"tls\" or \"wss\""));
        let twice = check(&[tls.clone(), tls.clone()], main).unwrap_err();
        assert!(
            twice.contains("#2 (127.0.0.1:8883) addr: already taken"),
            "{twice}"
        );
        let on_main = ExtraListener { addr: main, ..tls };
        assert!(check(&[on_main], main)
            .unwrap_err()
            .contains("already taken"));
        let ws = listener("addr = \"127.0.0.1:8080\"\ntransport = \"ws\"\n");
        assert_eq!(check(std::slice::from_ref(&ws), main), Ok(()));
        assert_eq!(ws.ws_path(), "/mqtt");
        let cn_without_ca = ExtraListener {
            use_cn_as_username: true,
            ..tls_like(&ws)
        };
        assert!(check(&[cn_without_ca], main)
            .unwrap_err()
            .contains("use_cn_as_username: needs mutual TLS"));
        let relative = ExtraListener {
            path: Some("mqtt".into()),
            ..ws.clone()
        };
        assert!(check(&[relative], main)
            .unwrap_err()
            .contains("path: \"mqtt\" does not start with /"));
        let wss = ExtraListener {
            transport: Transport::Wss,
            ..ws
        };
        assert!(check(&[wss], main)
            .unwrap_err()
            .contains("transport = \"wss\" needs cert and key"));
    }

    #[test]
    fn an_unknown_transport_or_key_is_refused_by_name() {
        let e = toml::from_str::<ExtraListener>("addr = \"127.0.0.1:1\"\ntransport = \"quic\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("quic"), "{e}");
        let e = toml::from_str::<ExtraListener>("addr = \"127.0.0.1:1\"\ncertificate = \"x\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("certificate"), "{e}");
    }
}
