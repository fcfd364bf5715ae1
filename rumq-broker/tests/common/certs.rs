//! Certificates made for a test (rcgen): a CA, a server certificate for 127.0.0.1
//! and a client certificate it signed, and a client certificate of another CA, as
//! PEM files; and the `[[listeners]]` entries that use them.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// PEM files of one test's certificates.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// A CA (`ca.pem`), a server certificate for 127.0.0.1 signed by it
    /// (`server.pem`, `server.key`), a client certificate signed by it
    /// (`client.pem`, `client.key`), and a client certificate of another CA
    /// (`stranger.pem`, `stranger.key`).
    pub fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = authority("rumq test CA");
        let (stranger_ca, stranger_ca_key) = authority("another CA");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        let leaf = |name: &str, sans: Vec<String>, issuer: (&rcgen::Certificate, &KeyPair)| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.signed_by(&key, issuer.0, issuer.1).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = leaf("127.0.0.1", vec!["127.0.0.1".into()], (&ca, &ca_key));
        write("server.pem", cert);
        write("server.key", key);
        let (cert, key) = leaf("device-1", vec![], (&ca, &ca_key));
        write("client.pem", cert);
        write("client.key", key);
        let (cert, key) = leaf("intruder", vec![], (&stranger_ca, &stranger_ca_key));
        write("stranger.pem", cert);
        write("stranger.key", key);
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A `[[listeners]]` entry for TLS on a port of the system's choosing, with a
    /// client CA when `mutual`.
    pub fn listener(&self, mutual: bool) -> String {
        self.listener_for("tls", mutual)
    }

    /// As `listener`, for `transport` (`tls` or `wss`).
    pub fn listener_for(&self, transport: &str, mutual: bool) -> String {
        let mut text = format!(
            "[[listeners]]\naddr = \"127.0.0.1:0\"\ntransport = {transport:?}\ncert = {:?}\nkey = {:?}\n",
            self.arg("server.pem"),
            self.arg("server.key")
        );
        if mutual {
            text += &format!("client_ca = {:?}\n", self.arg("ca.pem"));
        }
        text
    }
}

fn authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}
