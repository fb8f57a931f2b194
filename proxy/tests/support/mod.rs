//! Test support: a PKI made with rcgen, agent backends (in-process or as child processes that
//! can be SIGKILLed/SIGSTOPped), switch clients, and the real `tor-proxy` binary driven through
//! its JSON logs and admin API.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket};
use tor_proxy::admin::api::{AdminApiClient, Show};

/// Generous bound for anything that should happen "soon" (never a performance assert).
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: (CertificateParams, KeyPair),
    rogue: (CertificateParams, KeyPair),
}

fn ca_params(cn: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (p, key)
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_params("test CA");
        let rogue = ca_params("rogue CA");
        let pki = Pki { dir, ca, rogue };
        for (name, (p, k)) in [("ca", &pki.ca), ("rogue-ca", &pki.rogue)] {
            let cert = p.self_signed(k).unwrap();
            std::fs::write(pki.path(&format!("{name}.pem")), cert.pem()).unwrap();
        }
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A leaf certificate (server and client use) with CN `name`, SANs localhost and 127.0.0.1.
    pub fn leaf(&self, name: &str, rogue: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V4(
                Ipv4Addr::LOCALHOST,
            )));
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (ca_p, ca_k) = if rogue { &self.rogue } else { &self.ca };
        let issuer = Issuer::from_params(ca_p, ca_k);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let c = self.path(&format!("{name}.crt"));
        let k = self.path(&format!("{name}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// A switch's TLS client config: trusts the test CA, presents `cn`'s certificate.
    pub fn switch_tls(&self, cn: &str, rogue: bool) -> Arc<rustls::ClientConfig> {
        let (c, k) = self.leaf(cn, rogue);
        tor_proxy::tls::client_config(&self.ca(), Some(&c), Some(&k)).unwrap()
    }
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

// ---------------------------------------------------------------------------------------------
// Agents

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSpec {
    pub name: String,
    /// (cert, key, ca): mutual TLS like the real agent's pssl: listener.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// The readiness port answers with this file's first line.
    pub ready_file: Option<PathBuf>,
}

/// Serves an agent: greets each session with `agent=NAME peer=CN`, then echoes lines; on the
/// switch's EOF it answers `bye` and closes (exercises half-close).
pub async fn serve_agent(spec: AgentSpec) -> (SocketAddr, Option<SocketAddr>) {
    let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let main_addr = main.local_addr().unwrap();
    let acceptor = spec.tls.as_ref().map(|(c, k, ca)| {
        tokio_rustls::TlsAcceptor::from(tor_proxy::tls::server_config(c, k, Some(ca)).unwrap())
    });
    let name = spec.name.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = main.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let (stream, peer): (Box<dyn Stream>, String) = match acceptor {
                    Some(a) => match a.accept(tcp).await {
                        Ok(t) => {
                            let cn = t
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| tor_proxy::tls::subject_cn(c))
                                .unwrap_or_else(|| "?".into());
                            (Box::new(t), cn)
                        }
                        Err(_) => return,
                    },
                    None => (Box::new(tcp), "-".into()),
                };
                let mut s = BufReader::new(stream);
                if s.get_mut()
                    .write_all(format!("agent={name} peer={peer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = s.get_mut().flush().await;
                let mut line = String::new();
                loop {
                    line.clear();
                    match s.read_line(&mut line).await {
                        Ok(0) => {
                            let _ = s.get_mut().write_all(b"bye\n").await;
                            let _ = s.get_mut().shutdown().await;
                            return;
                        }
                        Ok(_) => {
                            if s.get_mut().write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                            let _ = s.get_mut().flush().await;
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    let ready_addr = match spec.ready_file.clone() {
        None => None,
        Some(file) => {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        continue;
                    };
                    let line = std::fs::read_to_string(&file).unwrap_or_default();
                    let line = line.lines().next().unwrap_or("").to_string();
                    let _ = s.write_all(format!("{line}\n").as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
            Some(addr)
        }
    };
    (main_addr, ready_addr)
}

/// Entry point of the child-process agent (see `helper_agent_process` in the test file).
pub fn agent_process_main() {
    let Ok(spec) = std::env::var("TOR_PROXY_TEST_AGENT") else {
        return;
    };
    let spec: AgentSpec = serde_json::from_str(&spec).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (main, ready) = serve_agent(spec).await;
        let ready = ready.map(|r| r.port()).unwrap_or(0);
        println!("AGENT main={} ready={}", main.port(), ready);
        std::future::pending::<()>().await;
    });
}

/// An agent in its own process, so it can be killed or stopped like a real one.
pub struct AgentProc {
    pub child: Child,
    pub port: u16,
    pub ready_port: Option<u16>,
}

impl AgentProc {
    pub fn start(spec: &AgentSpec) -> AgentProc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_agent_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TOR_PROXY_TEST_AGENT", serde_json::to_string(spec).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (port, ready) = loop {
            let line = lines
                .next()
                .expect("agent process exited before its ports")
                .unwrap();
            // libtest prints "test helper_agent_process ... " on the same line first.
            if let Some(rest) = line.find("AGENT ").and_then(|i| line.get(i + 6..)) {
                let mut it = rest
                    .split(' ')
                    .map(|kv| kv.split('=').nth(1).unwrap().parse::<u16>().unwrap());
                break (it.next().unwrap(), it.next().unwrap());
            }
        };
        std::thread::spawn(move || for _ in lines {});
        AgentProc {
            child,
            port,
            ready_port: (ready != 0).then_some(ready),
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Switches

pub struct Switch {
    pub greeting: String,
    s: BufReader<Box<dyn Stream>>,
}

/// Dials the proxy from `src` (any 127/8 address: a distinct switch identity), with TLS when
/// given, and reads the agent's greeting.
pub async fn switch(
    proxy: SocketAddr,
    src: Ipv4Addr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> std::io::Result<Switch> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src.into(), 0))?;
    let tcp = tokio::time::timeout(PATIENCE, sock.connect(proxy))
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))??;
    let stream: Box<dyn Stream> = match tls {
        Some(cfg) => Box::new(
            tokio::time::timeout(
                PATIENCE,
                tokio_rustls::TlsConnector::from(cfg)
                    .connect(ServerName::try_from("localhost").unwrap(), tcp),
            )
            .await
            .map_err(|_| std::io::Error::other("TLS timeout"))??,
        ),
        None => Box::new(tcp),
    };
    let mut s = BufReader::new(stream);
    let mut greeting = String::new();
    let n = tokio::time::timeout(PATIENCE, s.read_line(&mut greeting))
        .await
        .map_err(|_| std::io::Error::other("no greeting"))??;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before greeting",
        ));
    }
    Ok(Switch {
        greeting: greeting.trim().to_string(),
        s,
    })
}

impl Switch {
    /// The agent's name from the greeting.
    pub fn agent(&self) -> &str {
        self.greeting
            .split(' ')
            .find_map(|w| w.strip_prefix("agent="))
            .unwrap_or("")
    }

    pub fn peer(&self) -> &str {
        self.greeting
            .split(' ')
            .find_map(|w| w.strip_prefix("peer="))
            .unwrap_or("")
    }

    pub async fn echo(&mut self, text: &str) -> std::io::Result<String> {
        self.s
            .get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .await?;
        self.s.get_mut().flush().await?;
        let mut line = String::new();
        let n = tokio::time::timeout(PATIENCE, self.s.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::other("echo timeout"))??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim().to_string())
    }

    /// Half-closes our side and returns everything until the agent closes.
    pub async fn finish(mut self) -> std::io::Result<String> {
        self.s.get_mut().shutdown().await?;
        let mut rest = String::new();
        tokio::time::timeout(
            PATIENCE,
            tokio::io::AsyncReadExt::read_to_string(&mut self.s, &mut rest),
        )
        .await
        .map_err(|_| std::io::Error::other("no close"))??;
        Ok(rest)
    }

    /// Waits until the proxy closes the session; returns how long that took.
    pub async fn wait_closed(&mut self, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout_at(
                tokio::time::Instant::from_std(t0 + limit),
                tokio::io::AsyncReadExt::read(&mut self.s, &mut buf),
            )
            .await
            {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// A distinct loopback source address per switch index.
pub fn switch_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)
}

// ---------------------------------------------------------------------------------------------
// The proxy binary

pub struct ProxyProc {
    pub child: Child,
    pub config_path: PathBuf,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
    pub peer: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<Value>>>,
}

/// Calls `fetch` until `pred` holds on what it returns; panics with the last value after
/// PATIENCE.
async fn poll_until<T: std::fmt::Debug>(
    what: &str,
    fetch: impl Fn() -> T,
    pred: impl Fn(&T) -> bool,
) -> T {
    let t0 = Instant::now();
    loop {
        let v = fetch();
        if pred(&v) {
            return v;
        }
        if t0.elapsed() > PATIENCE {
            panic!("timed out waiting for {what}: {v:#?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get("fields")
        .and_then(|f| f.get(name))
        .and_then(Value::as_str)
}

impl ProxyProc {
    /// Writes `config` to `dir/name.toml` and starts the binary; waits until it serves.
    pub fn start(dir: &Path, name: &str, config: &str) -> ProxyProc {
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        Self::start_file(config_path)
    }

    pub fn start_file(config_path: PathBuf) -> ProxyProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tor-proxy"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let echo = std::env::var("TOR_PROXY_TEST_LOGS").is_ok();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if echo {
                    eprintln!("[proxy] {line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let mut p = ProxyProc {
            child,
            config_path,
            listeners: HashMap::new(),
            admin: "0.0.0.0:0".parse().unwrap(),
            peer: None,
            logs,
        };
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < PATIENCE, "proxy did not start");
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("proxy exited at start: {status}");
            }
            let started = p
                .logs()
                .iter()
                .any(|v| field(v, "message") == Some("tor-proxy started"));
            if started {
                for v in p.logs() {
                    match field(&v, "message") {
                        Some("listening") => {
                            p.listeners.insert(
                                field(&v, "listener").unwrap().to_string(),
                                field(&v, "addr").unwrap().parse().unwrap(),
                            );
                        }
                        Some("admin API listening") => {
                            p.admin = field(&v, "addr").unwrap().parse().unwrap()
                        }
                        Some("peer sync listening") => {
                            p.peer = Some(field(&v, "addr").unwrap().parse().unwrap())
                        }
                        _ => {}
                    }
                }
                return p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Session log lines (tcplog) seen so far.
    pub fn session_logs(&self) -> Vec<(String, String, String)> {
        self.logs()
            .iter()
            .filter(|v| v.get("fields").and_then(|f| f.get("termination")).is_some())
            .map(|v| {
                (
                    field(v, "switch").unwrap_or("").to_string(),
                    field(v, "backend").unwrap_or("").to_string(),
                    field(v, "termination").unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Polls the proxy's log until `pred` holds (lines arrive through a pipe, after the event
    /// they tell of); panics with the log after PATIENCE.
    pub async fn wait_for_logs(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        poll_until(what, || self.logs(), |l| pred(l)).await
    }

    /// Waits until the session log lines satisfy `pred`, and returns them.
    pub async fn wait_for_session_logs(
        &self,
        what: &str,
        pred: impl Fn(&[(String, String, String)]) -> bool,
    ) -> Vec<(String, String, String)> {
        poll_until(what, || self.session_logs(), |l| pred(l)).await
    }

    pub fn client(&self) -> jsonrpsee::http_client::HttpClient {
        tor_proxy::admin::client(self.admin, None).unwrap()
    }

    pub async fn show(&self) -> Show {
        self.client().show().await.unwrap()
    }

    /// Polls `show` until `pred` holds; panics with the last snapshot after PATIENCE.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Show) -> bool) -> Show {
        let t0 = Instant::now();
        loop {
            let s = self.show().await;
            if pred(&s) {
                return s;
            }
            if t0.elapsed() > PATIENCE {
                panic!(
                    "timed out waiting for {what}: {}",
                    tor_proxy::admin::status::render(&s)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < PATIENCE, "proxy did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn backend_state<'a>(s: &'a Show, name: &str) -> &'a tor_proxy::admin::api::BackendView {
    s.backends.iter().find(|b| b.name == name).unwrap()
}
