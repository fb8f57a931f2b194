//! Child processes (agents, proxies) the runner starts and hurts with real signals.
//!
//! Children are spawned from one long-lived thread with `PR_SET_PDEATHSIG` = SIGKILL (the
//! signal follows the thread that forked), so a runner that dies leaves no agent holding
//! ports on a shared machine.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::info;

use super::child::{CONFIG_ENV, ROLE_ENV};

/// How to start the real agent and proxy code in a child process.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// The `testbed` binary's hidden `run-agent` / `run-proxy` subcommands.
    Subcommand(PathBuf),
    /// A test binary's helper test that calls [`super::child::main_from_env`].
    LibtestHelper { exe: PathBuf, test: String },
}

impl Launcher {
    /// This process, when it is the `testbed` binary.
    pub fn current_exe() -> std::io::Result<Launcher> {
        Ok(Launcher::Subcommand(std::env::current_exe()?))
    }

    fn command(&self, role: Role, config: &Path) -> Command {
        match self {
            Launcher::Subcommand(exe) => {
                let mut c = Command::new(exe);
                c.arg(match role {
                    Role::Agent => "run-agent",
                    Role::Proxy => "run-proxy",
                })
                .arg("--config")
                .arg(config);
                c
            }
            Launcher::LibtestHelper { exe, test } => {
                let mut c = Command::new(exe);
                c.args([
                    "--exact",
                    test,
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE_ENV, role.as_str())
                .env(CONFIG_ENV, config);
                c
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Proxy,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Running,
    /// SIGSTOPped.
    Hung,
    /// Killed or exited.
    Down,
}

/// One child process and how to start it again.
pub struct Node {
    pub name: String,
    pub role: Role,
    pub config: PathBuf,
    pub log: PathBuf,
    launcher: Launcher,
    child: Option<Child>,
    pub state: NodeState,
    pub starts: u32,
}

type SpawnJob = (Command, std_mpsc::Sender<std::io::Result<Child>>);

/// The thread every child is forked from (it lives as long as the process).
fn spawner() -> &'static Mutex<std_mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnJob>();
        let _ = std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        Mutex::new(tx)
    })
}

fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, kill).
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    let (tx, rx) = std_mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

impl Node {
    pub fn new(name: &str, role: Role, config: PathBuf, log: PathBuf, launcher: Launcher) -> Node {
        Node {
            name: name.to_string(),
            role,
            config,
            log,
            launcher,
            child: None,
            state: NodeState::Down,
            starts: 0,
        }
    }

    /// Starts the process (its stderr and stdout are appended to the log file).
    pub fn start(&mut self) -> std::io::Result<()> {
        if self.child.is_some() {
            self.kill();
        }
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut cmd = self.launcher.command(self.role, &self.config);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = spawn(cmd)?;
        info!(node = %self.name, pid = child.id(), "started");
        self.child = Some(child);
        self.state = NodeState::Running;
        self.starts += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the running process (`None` when it is down).
    pub fn memory(&self) -> Option<Memory> {
        if self.state == NodeState::Down {
            return None;
        }
        let pid = self.pid()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Memory::parse(&text)
    }

    fn signal(&self, sig: i32) -> bool {
        match self.pid() {
            // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
            Some(pid) => unsafe { libc::kill(pid as i32, sig) == 0 },
            None => false,
        }
    }

    /// SIGKILL, then reap: a crash.
    pub fn kill(&mut self) {
        if self.state == NodeState::Hung {
            // A stopped process dies of SIGKILL too; nothing else to do.
        }
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.state = NodeState::Down;
    }

    /// SIGSTOP: a hang (the kernel still accepts connections for it).
    pub fn hang(&mut self) -> bool {
        let ok = self.signal(libc::SIGSTOP);
        if ok {
            self.state = NodeState::Hung;
        }
        ok
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> bool {
        let ok = self.signal(libc::SIGCONT);
        if ok {
            self.state = NodeState::Running;
        }
        ok
    }

    /// SIGTERM and a grace period, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if self.state == NodeState::Hung {
            self.signal(libc::SIGCONT);
        }
        if self.signal(libc::SIGTERM) {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Some(c) = self.child.as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        self.child = None;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Whether it exited on its own (not by our hand).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of its log (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT);
            self.kill();
        }
    }
}

/// Resident memory of a process from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kb: u64,
    /// VmHWM: the peak resident set since the process started.
    pub hwm_kb: u64,
}

impl Memory {
    pub fn parse(status: &str) -> Option<Memory> {
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        Some(Memory {
            rss_kb: field("VmRSS")?,
            hwm_kb: field("VmHWM")?,
        })
    }
}

/// Children bind their port again on every restart, so the proxy and the links keep
/// addressing them the same way.
pub use ovsdb::testing::free_port;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_proc_status() {
        let m = Memory::parse(
            "Name:\ttor-agent\nVmPeak:\t 900 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   40960 kB\n",
        );
        assert_eq!(
            m,
            Some(Memory {
                rss_kb: 40960,
                hwm_kb: 81234
            })
        );
        assert_eq!(Memory::parse("VmRSS:\t1 kB\n"), None);
        // Our own process has both fields.
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let m = Memory::parse(&own).unwrap();
        assert!(m.hwm_kb >= m.rss_kb && m.rss_kb > 0);
    }
}
