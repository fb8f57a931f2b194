//! Network namespaces for end-to-end tests that need a real L2 segment
//! between processes (the VRRP proxy pair): namespaces joined by veths to a
//! bridge, processes started inside a namespace, and tokio runtimes whose
//! sockets live in one.
//!
//! Why runtimes in a namespace and not only `ip netns exec`: a socket
//! belongs to the network namespace of the thread that creates it, so a
//! runtime whose threads joined a namespace (`setns(2)`) serves in-process
//! simulated switches, the control node and admin API clients there while
//! the test keeps their handles; a process started from such a thread (the
//! real `ovsdb-server` switch) inherits the namespace too. Daemons the test
//! kills or that keepalived supervises run as processes (`ip netns exec`).
//!
//! Every name is `{PREFIX}{pid}x{n}-{tag}`, so parallel runs never collide,
//! and [`clean_leftovers`] removes what a run that died (SIGKILL, power
//! loss) left behind: its namespaces and every process still inside them.
//! Interfaces are created directly inside namespaces (never in the host's),
//! so nothing outside them is touched.
//!
//! Cleanup is by guards ([`Netns`], [`Proc`], [`NsRuntime`]): whatever a
//! failing test had started is killed and deleted when it unwinds.

pub mod pair;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Every namespace this module creates starts with this.
pub const PREFIX: &str = "e2evrrp";

const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// Fails the test (never skips it) unless it runs as root with `ip` and
/// keepalived installed; `scripts/test.sh` installs both.
pub fn require_root_and_tools() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test creates network namespaces, veths and runs keepalived: run it as root"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.as_ref().is_ok_and(|o| o.status.success()),
        "`ip` (iproute2) is missing or broken ({ip:?}): apt-get install iproute2"
    );
    let k = keepalived_path();
    let v = Command::new(&k).arg("--version").output();
    assert!(
        v.as_ref().is_ok_and(|o| o.status.success()),
        "keepalived is missing ({}: {v:?}): apt-get install keepalived",
        k.display()
    );
}

/// Debian's keepalived, or the first one on PATH.
pub fn keepalived_path() -> PathBuf {
    let p = PathBuf::from(KEEPALIVED);
    if p.is_file() {
        return p;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|d| d.join("keepalived"))
        .find(|p| p.is_file())
        .unwrap_or(p)
}

/// The workspace's binaries beside the running test or bench executable
/// (`target/<profile>/deps/x` → `target/<profile>/`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`, \
         with --release for benches); scripts/test.sh does",
        bin.display()
    );
    bin
}

/// Runs `ip ARGS…`; the error holds its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip [-n NS] -batch -` with one command per line (one process for
/// many commands: a hundred switches need hundreds of them).
pub fn ip_batch(ns: Option<&str>, lines: &str) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ip -batch: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.as_bytes())
            .map_err(|e| format!("ip -batch: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ip -batch: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}-batch failed: {}\n{lines}",
            ns.map(|n| format!("-n {n} ")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A unique name prefix for one lab of this process.
pub fn unique_prefix() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{PREFIX}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Names of the namespaces that currently exist.
pub fn list_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Removes namespaces left by runs whose process is gone, after killing the
/// processes still inside them. Namespaces of live runs are left alone.
pub fn clean_leftovers() -> usize {
    let mut removed = 0;
    for name in list_namespaces() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_all_in(&name);
        let _ = ip(&["netns", "del", &name]);
        removed += 1;
    }
    removed
}

/// Pids of the processes whose network namespace is `name`.
pub fn pids_in(name: &str) -> Vec<u32> {
    ip(&["netns", "pids", name])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != std::process::id())
        .collect()
}

fn kill_all_in(name: &str) {
    // Twice: a supervisor (keepalived's parent) may fork a child meanwhile.
    for _ in 0..2 {
        for pid in pids_in(name) {
            kill(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to one process, by its id.
pub fn kill(pid: u32, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory preconditions; a stale pid gives ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// The command name of a process (`/proc/PID/comm`).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A network namespace, deleted (with every process left in it killed)
/// when dropped.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    pub fn create(name: &str) -> Result<Netns, String> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME program`: the program runs inside (ip execs it,
    /// so the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Processes inside.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }

    /// IPv4 addresses configured on `dev`.
    pub fn ipv4_addrs(&self, dev: &str) -> Vec<Ipv4Addr> {
        ip(&["-n", &self.name, "-4", "-o", "addr", "show", "dev", dev])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .collect()
    }

    /// Runs `f` on a new thread that joined this namespace; processes it
    /// starts are born inside.
    pub fn run_blocking<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let file = File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                setns(&file).unwrap_or_else(|e| panic!("setns {}: {e}", self.name));
                f()
            });
            match t.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: the fd is an open namespace file for the life of the call;
    // setns only changes the calling thread's network namespace.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A switched LAN: a bridge `br0` in its own namespace, and for each member
/// namespace one veth whose inside end is `eth0`.
pub struct Lan {
    pub ns: Netns,
    ports: u32,
}

impl Lan {
    pub fn create(name: &str) -> Result<Lan, String> {
        let ns = Netns::create(name)?;
        ip_batch(
            Some(name),
            // No STP and no forwarding delay: ports forward as soon as they are up.
            "link add br0 type bridge stp_state 0 forward_delay 0\nlink set br0 up\n",
        )?;
        Ok(Lan { ns, ports: 0 })
    }

    /// Plugs each member in with the given `ADDR/LEN`s on its `eth0`.
    pub fn attach(&mut self, members: &[(&Netns, Vec<String>)]) -> Result<(), String> {
        let mut lan = String::new();
        let mut inside = Vec::new();
        for (member, addrs) in members {
            self.ports += 1;
            let port = format!("v{}", self.ports);
            let _ = writeln!(
                lan,
                "link add {port} type veth peer name eth0 netns {}",
                member.name()
            );
            let _ = writeln!(lan, "link set {port} master br0 up");
            let mut cmds = String::new();
            for a in addrs {
                let _ = writeln!(cmds, "addr add {a} dev eth0");
            }
            cmds.push_str("link set eth0 up\n");
            inside.push((member.name().to_string(), cmds));
        }
        ip_batch(Some(self.ns.name()), &lan)?;
        for (ns, cmds) in inside {
            ip_batch(Some(&ns), &cmds)?;
        }
        Ok(())
    }
}

/// A tokio runtime on a thread inside a namespace: every socket its tasks
/// open is in that namespace. Stops (dropping its tasks) when dropped.
pub struct NsRuntime {
    name: String,
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    pub fn start(ns: &Netns) -> Result<NsRuntime, String> {
        let file = Arc::new(
            File::open(ns.path()).map_err(|e| format!("open {}: {e}", ns.path().display()))?,
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let name = ns.name().to_string();
        let thread = std::thread::Builder::new()
            .name(format!("ns-{}", name.rsplit('-').next().unwrap_or("")))
            .spawn(move || {
                if let Err(e) = setns(&file) {
                    let _ = tx.send(Err(format!("setns: {e}")));
                    return;
                }
                let blocking = file.clone();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    // Blocking-pool threads may be spawned from anywhere: join them too.
                    .on_thread_start(move || {
                        if let Err(e) = setns(&blocking) {
                            eprintln!("setns on a blocking thread failed: {e}");
                            std::process::abort();
                        }
                    })
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                let _ = tx.send(Ok((rt.handle().clone(), stop_tx)));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| format!("thread: {e}"))?;
        let (handle, stop) = rx
            .recv()
            .map_err(|_| "namespace thread died".to_string())??;
        Ok(NsRuntime {
            name,
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `f` in the namespace and returns its output (a panic in `f`
    /// is re-raised here).
    pub async fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle.spawn(f).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("task in namespace {} cancelled: {e}", self.name),
        }
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process with its output in a log file; SIGKILLed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Still running (not exited, not killed)?
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash; reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(c) = self.child.as_mut() {
            kill(c.id(), libc::SIGTERM);
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
