//! The address browsers send this pod's media to, when the operator hands it out at run time:
//! each pod reads its own file from the mounted addresses ConfigMap (see
//! `NetworkSettings::advertised_media_address_dir`) and follows it as the kubelet updates it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

/// How often the pod's address file is read again (the kubelet rewrites it in place).
const REREAD_EVERY: Duration = Duration::from_secs(2);

/// `host:port` as the operator writes it: an IP (a load balancer's or a node's) or a DNS name
/// (a load balancer that reports a hostname).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub host: String,
    pub port: u16,
}

/// Parses a pod's address file. The error says what is wrong, for the log and `/readyz`.
pub fn parse(text: &str) -> Result<Advertised, String> {
    let text = text.trim();
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?}: the port is not a number from 1 to 65535"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("{text:?} is not host:port"));
    }
    Ok(Advertised {
        host: host.to_string(),
        port,
    })
}

/// Turns what the file says into a socket address a browser can reach: names are resolved
/// (IPv4 first, since the media socket is IPv4), and an unspecified address is refused.
pub async fn resolve(advertised: &Advertised) -> Result<SocketAddr, String> {
    let candidates: Vec<SocketAddr> =
        tokio::net::lookup_host((advertised.host.as_str(), advertised.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", advertised.host))?
            .collect();
    let chosen = candidates
        .iter()
        .find(|a| a.is_ipv4())
        .or(candidates.first())
        .copied()
        .ok_or_else(|| format!("{} resolves to no address", advertised.host))?;
    if chosen.ip().is_unspecified() {
        return Err(format!(
            "{chosen} is not an address a browser can reach; the operator must name the \
             pod's public address"
        ));
    }
    Ok(chosen)
}

/// The file that names `pod`'s address in `dir`.
pub fn file_of(dir: &Path, pod: &str) -> PathBuf {
    dir.join(pod)
}

/// Follows the pod's address file: publishes each usable address it names, logging why when
/// it names none. Ends when nobody listens any more.
pub async fn follow(file: PathBuf, published: watch::Sender<Option<SocketAddr>>) {
    let mut last_problem = None;
    loop {
        let found = match tokio::fs::read_to_string(&file).await {
            Ok(text) => match parse(&text) {
                Ok(advertised) => resolve(&advertised).await,
                Err(e) => Err(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "{} does not exist yet (the operator has not given this pod an address)",
                file.display()
            )),
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        };
        match found {
            Ok(address) => {
                last_problem = None;
                published.send_if_modified(|current| {
                    let changed = *current != Some(address);
                    if changed {
                        tracing::info!(%address, "advertising this media address");
                        *current = Some(address);
                    }
                    changed
                });
            }
            Err(problem) => {
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(%problem, "no usable media address: not Ready");
                    last_problem = Some(problem);
                }
            }
        }
        if published.is_closed() {
            return;
        }
        tokio::time::sleep(REREAD_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_a_name_and_a_bracketed_ipv6_address_parse() {
        assert_eq!(
            parse("203.0.113.7:31000\n").expect("ip"),
            Advertised {
                host: "203.0.113.7".into(),
                port: 31000
            }
        );
        assert_eq!(
            parse("lb.example.net:3478").expect("name").host,
            "lb.example.net"
        );
        assert_eq!(parse("[2001:db8::7]:3478").expect("v6").host, "2001:db8::7");
    }

    #[test]
    fn text_without_a_usable_port_is_refused_with_the_text() {
        for bad in [
            "203.0.113.7",
            "203.0.113.7:0",
            "203.0.113.7:99999",
            ":3478",
            "",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(&format!("{:?}", bad.trim())), "{e}");
        }
    }

    #[tokio::test]
    async fn an_unspecified_address_is_never_advertised() {
        let e = resolve(&parse("0.0.0.0:3478").expect("parse"))
            .await
            .expect_err("0.0.0.0 reaches nobody");
        assert!(e.contains("not an address a browser can reach"), "{e}");
        let ok = resolve(&parse("127.0.0.1:3478").expect("parse")).await;
        assert_eq!(ok, Ok("127.0.0.1:3478".parse().expect("addr")));
    }

    #[tokio::test]
    async fn following_a_file_publishes_its_address_once_it_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = file_of(dir.path(), "media-0");
        let (tx, mut rx) = watch::channel(None);
        let task = tokio::spawn(follow(file.clone(), tx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*rx.borrow(), None, "no file, no address");
        std::fs::write(&file, "127.0.0.9:31001\n").expect("write");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("published within a re-read")
            .expect("sender alive");
        assert_eq!(*rx.borrow(), Some("127.0.0.9:31001".parse().expect("addr")));
        task.abort();
    }
}
