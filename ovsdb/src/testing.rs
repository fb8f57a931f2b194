//! Test fixtures shared by every crate's tests (feature `testing`): a real
//! `ovsdb-server` with the hardware_vtep schema, started in a temporary
//! directory exactly as on a switch (ovsdb-anchors §8.2), and `vtep-ctl`.
//!
//! Missing binaries are an error, never a skip: the test command installs
//! Debian's `openvswitch-vtep`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the schema the real server serves.
pub const VTEP_SCHEMA_PATH: &str = "/usr/share/openvswitch/vtep.ovsschema";

fn require(bin: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(bin).is_file();
    if found {
        Ok(())
    } else {
        Err(format!(
            "{bin} not found: install Debian's openvswitch-vtep (scripts/test.sh does it)"
        ))
    }
}

fn sbin(bin: &str) -> PathBuf {
    let p = Path::new("/usr/sbin").join(bin);
    if p.is_file() {
        p
    } else {
        PathBuf::from(bin)
    }
}

/// A running real `ovsdb-server` with a fresh hardware_vtep database.
pub struct RealSwitch {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// `unix:` socket for vtep-ctl and direct clients.
    pub unix_target: String,
    /// `tcp:` (or `ssl:` with TLS) target, when started with a network listener.
    pub net_target: Option<String>,
}

/// TLS files for the real server (`-p`, `-c`, `-C`).
#[derive(Clone, Debug)]
pub struct RealTls {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
}

impl RealSwitch {
    /// Starts a server listening on a unix socket (and on `ptcp:`, or
    /// `pssl:` when TLS files are given, if `listen` is true), following
    /// `Global.managers` for dial-out (over TLS too when files are given).
    pub fn start(listen: bool, tls: Option<&RealTls>) -> Result<RealSwitch, String> {
        require("ovsdb-server")?;
        require("ovsdb-tool")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let db = dir.path().join("vtep.db");
        let sock = dir.path().join("db.sock");
        let status = Command::new(sbin("ovsdb-tool"))
            .arg("create")
            .arg(&db)
            .arg(VTEP_SCHEMA_PATH)
            .status()
            .map_err(|e| format!("ovsdb-tool: {e}"))?;
        if !status.success() {
            return Err(format!("ovsdb-tool create failed: {status}"));
        }
        let mut cmd = Command::new(sbin("ovsdb-server"));
        cmd.arg(format!("--remote=punix:{}", sock.display()))
            .arg("--remote=db:hardware_vtep,Global,managers")
            .arg(format!("--unixctl={}", dir.path().join("ctl").display()))
            .arg(format!(
                "--log-file={}",
                dir.path().join("ovsdb-server.log").display()
            ))
            .arg("--no-chdir")
            .arg("-vconsole:off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut net_target = None;
        if listen {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let (passive, active) = if tls.is_some() {
                ("pssl", "ssl")
            } else {
                ("ptcp", "tcp")
            };
            cmd.arg(format!("--remote={passive}:{port}:127.0.0.1"));
            net_target = Some(format!("{active}:127.0.0.1:{port}"));
        }
        if let Some(t) = tls {
            cmd.arg(format!("--private-key={}", t.key.display()))
                .arg(format!("--certificate={}", t.cert.display()))
                .arg(format!("--ca-cert={}", t.ca.display()));
        }
        cmd.arg(&db);
        let child = cmd.spawn().map_err(|e| format!("ovsdb-server: {e}"))?;
        let mut sw = RealSwitch {
            unix_target: format!("unix:{}", sock.display()),
            dir,
            child: Some(child),
            net_target,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(format!("ovsdb-server did not start: {}", sw.log()));
            }
            if let Some(Ok(Some(st))) = sw.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("ovsdb-server exited ({st}): {}", sw.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(t) = &sw.net_target {
            let addr = t
                .split_once(':')
                .map(|(_, a)| a.to_string())
                .unwrap_or_default();
            while std::net::TcpStream::connect(&addr).is_err() {
                if Instant::now() > deadline {
                    return Err(format!(
                        "ovsdb-server not listening on {addr}: {}",
                        sw.log()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(sw)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ovsdb-server.log")).unwrap_or_default()
    }

    /// Runs `vtep-ctl --db=<unix socket> ARGS…` and returns its stdout.
    pub fn vtep_ctl(&self, args: &[&str]) -> Result<String, String> {
        require("vtep-ctl")?;
        let out = Command::new("vtep-ctl")
            .arg(format!("--db={}", self.unix_target))
            .arg("--timeout=10")
            .args(args)
            .output()
            .map_err(|e| format!("vtep-ctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "vtep-ctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ovsdb-client ARGS…` (the caller supplies the target).
    pub fn ovsdb_client(args: &[&str]) -> Result<String, String> {
        require("ovsdb-client")?;
        let out = Command::new("ovsdb-client")
            .args(args)
            .output()
            .map_err(|e| format!("ovsdb-client: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ovsdb-client {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RealSwitch {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago, for a daemon to bind (again, on every restart)
/// or for a test to name before the daemon exists.
///
/// Ports come from below the kernel's ephemeral range (32768 and up by default): no outgoing
/// connection and no `bind(0)` of another test can take one while its owner is down, and no
/// port is handed out twice by one process (two `bind(0)` in a row may return the same port
/// once the first listener is closed). The start is spread by the process id so concurrent
/// test processes rarely probe the same ports.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(2654435761) >> 7) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let off = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let Ok(port) = u16::try_from(LOW + off) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Test PKI: a CA and leaf certificates signed by it, written as PEM files.
pub struct TestPki {
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    ca_issuer_params: rcgen::CertificateParams,
    pub dir: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> Result<TestPki, String> {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("ca-cert.pem"), cert.pem()).map_err(|e| e.to_string())?;
        Ok(TestPki {
            ca_cert: cert,
            ca_key: key,
            ca_issuer_params: params,
            dir: dir.to_path_buf(),
        })
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca-cert.pem")
    }

    /// Issues a certificate with this common name (and 127.0.0.1 as an IP
    /// SAN) and returns (cert path, key path).
    pub fn issue(&self, common_name: &str) -> Result<(PathBuf, PathBuf), String> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .map_err(|e| e.to_string())?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST,
            )));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let issuer = rcgen::Issuer::from_params(&self.ca_issuer_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        let _ = &self.ca_cert;
        let cert_path = self.dir.join(format!("{common_name}-cert.pem"));
        let key_path = self.dir.join(format!("{common_name}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).map_err(|e| e.to_string())?;
        std::fs::write(&key_path, key.serialize_pem()).map_err(|e| e.to_string())?;
        Ok((cert_path, key_path))
    }
}

#[cfg(test)]
mod tests {
    use super::free_port;

    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let set: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        assert!(
            ports.iter().all(|p| (20_000..32_000).contains(p)),
            "{ports:?}"
        );
    }
}
