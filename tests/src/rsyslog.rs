//! rsyslog (Debian's package) as a real syslog-over-TLS sink on loopback: a test CA and a
//! server certificate made at test time, RFC 5425 framing, every message written to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub fn unavailable() -> Option<String> {
    let gtls = [
        "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
        "/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !Path::new("/usr/sbin/rsyslogd").exists() || !gtls {
        return Some(
            "rsyslog with TLS is missing (apt-get install rsyslog rsyslog-gnutls; scripts/test-deps.sh does it)"
                .into(),
        );
    }
    None
}

#[derive(Debug)]
pub struct Rsyslog {
    child: Option<Child>,
    pub ip: String,
    pub port: u16,
    pub ca_file: PathBuf,
    dir: PathBuf,
}

impl Rsyslog {
    /// Writes the CA, the server certificate and the config into `dir`, and starts rsyslogd
    /// on loopback.
    pub async fn start(dir: &Path) -> Rsyslog {
        Self::start_on(dir, "127.0.0.1").await
    }

    /// As [`Rsyslog::start`], listening on `ip` (an address of the caller's network namespace,
    /// such as a test cluster's node, where pods reach it).
    pub async fn start_on(dir: &Path, ip: &str) -> Rsyslog {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec![ip.to_string(), "localhost".to_string()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server cert");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("ca");
        std::fs::write(dir.join("server.pem"), server.pem()).expect("cert");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("key");
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let d = dir.display();
        std::fs::write(
            dir.join("rsyslog.conf"),
            format!(
                r#"global(workDirectory="{d}" DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{d}/ca.pem" DefaultNetstreamDriverCertFile="{d}/server.pem"
  DefaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="{ip}")
template(name="records" type="string" string="%structured-data% %msg%\n")
action(type="omfile" file="{d}/received.log" template="records")
"#
            ),
        )
        .expect("config");
        let mut rsyslog = Rsyslog {
            child: None,
            ip: ip.to_string(),
            port,
            ca_file,
            dir: dir.to_path_buf(),
        };
        rsyslog.restart().await;
        rsyslog
    }

    /// Starts (again) on the same port.
    pub async fn restart(&mut self) {
        let child = Command::new("/usr/sbin/rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect((self.ip.as_str(), self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("rsyslogd did not listen on {}", self.port);
    }

    /// SIGKILL: whatever it had not written is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
    }

    /// Each received message: (structured data, message).
    pub fn received(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let brace = l.find(" {")?;
                Some((l[..brace].to_string(), l[brace + 1..].to_string()))
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}
