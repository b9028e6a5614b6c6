//! A join that reaches a pod other than its room's is carried on to the room's pod: the pod
//! opens a WebSocket to it inside the cluster (TLS, trusting only the tenant's own certificate)
//! and relays frames both ways. Clients know one endpoint; their media goes straight to the
//! room's pod, whose answer names its own address.
//!
//! The room's pod audits the client's address, not the relaying pod's: the relay passes it in
//! a header with an HMAC under the tenant's join key, so nobody outside the tenant can forge it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{self, WebSocket};
use axum::http::HeaderMap;
use futures::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::error::NodeError;
use crate::tls::ServedCertificate;

pub const CLIENT_IP_HEADER: &str = "x-bedside-client-ip";
pub const CLIENT_PROOF_HEADER: &str = "x-bedside-client-proof";
/// How long the room's pod gets to answer before the client is told to try again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn hmac_key(join_key: &[u8]) -> aws_lc_rs::hmac::Key {
    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, join_key)
}

fn proof_input(ip: IpAddr) -> String {
    format!("bedside-forwarded-client\0{ip}")
}

/// The header value that vouches for `ip`.
pub fn proof(join_key: &[u8], ip: IpAddr) -> String {
    aws_lc_rs::hmac::sign(&hmac_key(join_key), proof_input(ip).as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The client address a relaying pod vouched for, if the request carries one with a valid proof.
pub fn forwarded_client(join_key: &[u8], headers: &HeaderMap) -> Option<IpAddr> {
    let ip: IpAddr = headers.get(CLIENT_IP_HEADER)?.to_str().ok()?.parse().ok()?;
    let given = headers.get(CLIENT_PROOF_HEADER)?.to_str().ok()?;
    let bytes: Vec<u8> = (0..given.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(given.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    aws_lc_rs::hmac::verify(&hmac_key(join_key), proof_input(ip).as_bytes(), &bytes)
        .ok()
        .map(|()| ip)
}

/// Trusts exactly the certificate this pod serves (or served before its last renewal): every
/// pod of a tenant mounts the same one, and pods are reached by IP, which the certificate does
/// not name. A pod whose mount was renewed first presents a certificate this pod does not
/// know yet: it reads its own mount again before refusing.
#[derive(Debug)]
struct SameCertificate {
    ours: Arc<ServedCertificate>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for SameCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.ours.is_ours(end_entity)
            || (self.ours.reload().is_ok() && self.ours.is_ours(end_entity))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS client a pod uses to reach the other pods of its tenant.
pub fn peer_tls(ours: Arc<ServedCertificate>) -> Result<Arc<rustls::ClientConfig>, NodeError> {
    let provider = Arc::new(crate::tls::crypto_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SameCertificate { ours, provider }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket to the room's pod, vouching for the client's address.
pub async fn connect(
    url: &str,
    client_ip: IpAddr,
    join_key: &[u8],
    tls: Arc<rustls::ClientConfig>,
) -> Result<Upstream, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    for (name, value) in [
        (CLIENT_IP_HEADER, client_ip.to_string()),
        (CLIENT_PROOF_HEADER, proof(join_key, client_ip)),
    ] {
        let value = value.parse().map_err(|_| "an invalid header".to_string())?;
        headers.insert(name, value);
    }
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((upstream, _))) => Ok(upstream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// Relays frames both ways until either side closes; pings are answered on each hop.
pub async fn relay(client: WebSocket, upstream: Upstream, first: ws::Message) {
    let (mut down_tx, mut down_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    if let Some(first) = to_upstream(first)
        && up_tx.send(first).await.is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            from_client = down_rx.next() => match from_client {
                Some(Ok(message)) => {
                    let closing = matches!(message, ws::Message::Close(_));
                    if let Some(message) = to_upstream(message)
                        && up_tx.send(message).await.is_err()
                    {
                        break;
                    }
                    if closing {
                        break;
                    }
                }
                _ => {
                    let _ = up_tx.send(tungstenite::Message::Close(None)).await;
                    break;
                }
            },
            from_room = up_rx.next() => match from_room {
                Some(Ok(message)) => {
                    let closing = matches!(message, tungstenite::Message::Close(_));
                    if let Some(message) = to_client(message)
                        && down_tx.send(message).await.is_err()
                    {
                        break;
                    }
                    if closing {
                        break;
                    }
                }
                _ => {
                    // The room's pod went away without a word: the client reconnects.
                    let _ = down_tx
                        .send(ws::Message::Close(Some(ws::CloseFrame {
                            code: 1001,
                            reason: "the visit's media node went away; reconnect".into(),
                        })))
                        .await;
                    break;
                }
            },
        }
    }
}

fn to_upstream(message: ws::Message) -> Option<tungstenite::Message> {
    Some(match message {
        ws::Message::Text(text) => tungstenite::Message::text(text.as_str()),
        ws::Message::Binary(bytes) => tungstenite::Message::Binary(bytes),
        ws::Message::Close(frame) => {
            tungstenite::Message::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }))
        }
        ws::Message::Ping(_) | ws::Message::Pong(_) => return None,
    })
}

fn to_client(message: tungstenite::Message) -> Option<ws::Message> {
    Some(match message {
        tungstenite::Message::Text(text) => ws::Message::Text(text.as_str().into()),
        tungstenite::Message::Binary(bytes) => ws::Message::Binary(bytes),
        tungstenite::Message::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsMaterial;

    fn served(material: &TlsMaterial) -> Arc<ServedCertificate> {
        ServedCertificate::new(material.clone(), None).expect("served")
    }

    /// A TLS handshake in memory between a pod's peer client and a server with `server`.
    fn handshake(
        client: &Arc<ServedCertificate>,
        server: &Arc<ServedCertificate>,
    ) -> Result<(), rustls::Error> {
        let client_config = peer_tls(client.clone()).expect("client config");
        let server_config = crate::tls::server_config(server.clone()).expect("server config");
        let name = ServerName::try_from("10.244.0.7").expect("an IP name");
        let mut c = rustls::ClientConnection::new(client_config, name)?;
        let mut s = rustls::ServerConnection::new(server_config)?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).expect("write");
            s.read_tls(&mut &wire[..]).expect("read");
            s.process_new_packets()?;
            let mut wire = Vec::new();
            s.write_tls(&mut wire).expect("write");
            c.read_tls(&mut &wire[..]).expect("read");
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err(rustls::Error::General(
            "the handshake did not finish".into(),
        ))
    }

    #[test]
    fn a_carried_join_trusts_the_tenants_certificate_and_no_other() {
        let ours = served(&TlsMaterial::self_signed().expect("our certificate"));
        let theirs = served(&TlsMaterial::self_signed().expect("another certificate"));
        // Another pod of the tenant (the same certificate, reached by IP): trusted.
        handshake(&ours, &ours).expect("the tenant's own certificate is trusted");
        // Anything else at that address (another tenant, an impostor): refused.
        let refused = handshake(&ours, &theirs).expect_err("another certificate is refused");
        assert!(
            matches!(refused, rustls::Error::InvalidCertificate(_)),
            "{refused:?}"
        );
    }

    #[test]
    fn pods_trust_each_other_across_a_renewal_either_one_sees_first() {
        let old = TlsMaterial::self_signed().expect("old");
        let new = TlsMaterial::self_signed().expect("new");
        let (renewed, waiting) = (served(&old), served(&old));
        renewed.offer(new.clone()).expect("renewed");
        // The renewed pod still trusts the one that serves the old certificate.
        handshake(&renewed, &waiting).expect("old certificate trusted after a renewal");
        // The pod not yet renewed (no files to read again here) refuses the new one: with a
        // mount, it reads its files before refusing (`a_pod_reads_its_mount_again...`).
        assert!(handshake(&waiting, &renewed).is_err());
        waiting.offer(new).expect("renewed too");
        handshake(&waiting, &renewed).expect("both renewed");
    }

    #[test]
    fn a_pod_reads_its_mount_again_before_refusing_an_unknown_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        let files = crate::tls::TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let write = |m: &TlsMaterial| {
            std::fs::write(&files.cert, &m.cert_pem).expect("cert");
            std::fs::write(&files.key, &m.key_pem).expect("key");
        };
        let old = TlsMaterial::self_signed().expect("old");
        let new = TlsMaterial::self_signed().expect("new");
        write(&old);
        let mounted = ServedCertificate::new(old, Some(files.clone())).expect("served");
        write(&new);
        handshake(&mounted, &served(&new)).expect("the renewed mount is read on demand");
    }

    #[test]
    fn only_a_pod_with_the_tenants_key_can_vouch_for_a_client_address() {
        let key = b"the tenant's join key, 32 bytes!";
        let ip: IpAddr = "203.0.113.7".parse().expect("an address");
        let mut headers = HeaderMap::new();
        headers.insert(CLIENT_IP_HEADER, "203.0.113.7".parse().expect("a value"));
        headers.insert(
            CLIENT_PROOF_HEADER,
            proof(key, ip).parse().expect("a value"),
        );
        assert_eq!(forwarded_client(key, &headers), Some(ip));
        assert_eq!(forwarded_client(b"another tenant's key", &headers), None);
        // The same proof does not vouch for another address.
        headers.insert(CLIENT_IP_HEADER, "198.51.100.1".parse().expect("a value"));
        assert_eq!(forwarded_client(key, &headers), None);
        headers.insert(CLIENT_PROOF_HEADER, "zz".parse().expect("a value"));
        assert_eq!(forwarded_client(key, &headers), None);
    }
}
