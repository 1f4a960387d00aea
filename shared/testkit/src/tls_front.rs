//! A TLS front for the test PostgreSQL server, standing where RDS Proxy stands before Aurora:
//! it takes only TLS (the client's `SSLRequest` is answered `S`, anything else is refused),
//! presents a certificate for 127.0.0.1 signed by a CA made on the spot, asks the client for a
//! cleartext password (as the proxy does for an IAM token), checks it, and only then hands the
//! session to the server. It keeps every password it was given.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// PostgreSQL's `SSLRequest` code.
const SSL_REQUEST: u32 = 80_877_103;

pub struct TlsFront {
    pub addr: SocketAddr,
    /// The CA that signed the front's certificate, PEM: trust it to connect.
    pub ca_pem: String,
    passwords: Arc<Mutex<Vec<String>>>,
}

/// Whether a password is accepted, given the front's own port (a token names it).
type Check = Arc<dyn Fn(&str, u16) -> bool + Send + Sync>;

impl TlsFront {
    /// A front on a free loopback port for the server at `server`, accepting the passwords
    /// `check` accepts (given with the front's port).
    pub async fn start(
        server: SocketAddr,
        check: impl Fn(&str, u16) -> bool + Send + Sync + 'static,
    ) -> Self {
        let (config, ca_pem) = server_config();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let passwords = Arc::new(Mutex::new(Vec::new()));
        let check: Check = Arc::new(check);
        let kept = passwords.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, check, kept) = (acceptor.clone(), check.clone(), kept.clone());
                tokio::spawn(async move {
                    let _ = session(client, server, addr.port(), acceptor, check, kept).await;
                });
            }
        });
        TlsFront {
            addr,
            ca_pem,
            passwords,
        }
    }

    /// The passwords clients gave, in order.
    pub fn passwords(&self) -> Vec<String> {
        self.passwords.lock().unwrap().clone()
    }
}

/// A TLS server's configuration with a certificate for 127.0.0.1 and `localhost`, signed by a
/// CA made on the spot, and that CA as PEM (for a client that should trust it).
pub fn server_config() -> (rustls::ServerConfig, String) {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "timeline test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("a CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("a server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server parameters")
        .signed_by(&key, &issuer)
        .expect("a server certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("a server configuration");
    (config, ca_cert.pem())
}

async fn session(
    mut client: TcpStream,
    server: SocketAddr,
    port: u16,
    acceptor: tokio_rustls::TlsAcceptor,
    check: Check,
    kept: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut request = [0u8; 8];
    client.read_exact(&mut request).await?;
    if u32::from_be_bytes(request[4..8].try_into().unwrap()) != SSL_REQUEST {
        // A client that did not ask for TLS: refused before anything else is read.
        client
            .write_all(&error_response(
                "08P01",
                "this server takes TLS connections only",
            ))
            .await?;
        return Ok(());
    }
    client.write_all(b"S").await?;
    let mut tls = acceptor.accept(client).await?;
    let startup = read_startup(&mut tls).await?;
    // AuthenticationCleartextPassword, then the client's PasswordMessage ('p').
    tls.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    let mut head = [0u8; 5];
    tls.read_exact(&mut head).await?;
    let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    tls.read_exact(&mut body).await?;
    let password = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
    kept.lock().unwrap().push(password.clone());
    if head[0] != b'p' || !check(&password, port) {
        tls.write_all(&error_response("28P01", "password authentication failed"))
            .await?;
        tls.shutdown().await?;
        return Ok(());
    }
    // The server trusts loopback: it answers the startup with AuthenticationOk.
    let mut backend = TcpStream::connect(server).await?;
    backend.write_all(&startup).await?;
    tokio::io::copy_bidirectional(&mut tls, &mut backend).await?;
    Ok(())
}

async fn read_startup(stream: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let mut message = len.to_vec();
    message.resize(u32::from_be_bytes(len) as usize, 0);
    stream.read_exact(&mut message[4..]).await?;
    Ok(message)
}

fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}
