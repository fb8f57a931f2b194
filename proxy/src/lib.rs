//! `tor-proxy`: the least-connections TCP/TLS active-standby proxy in front of the ToR agents.
//!
//! Every top-of-rack switch dials the manager VIP; the proxy sends it to exactly one healthy
//! agent and closes its session at once when that agent is marked down, so the switch reconnects
//! to the other agent within a second instead of staying pinned to a dead one.
//!
//! Module map (pure logic apart from the I/O that drives it):
//! - [`config`]: TOML, defaults, validation (`check-config`).
//! - [`balance`]: weighted least-connections with round-robin ties (pure).
//! - [`health`]: rise/fall/fast-interval state machine on a virtual clock (pure).
//! - [`checks`]: TCP / TLS / readiness probes driving [`health`]; [`checks::readiness`] parses
//!   the agent's readiness line.
//! - [`backend`]: backends at run time, leases, the pool.
//! - [`forward`]: listeners, passthrough and TLS termination, retries with redispatch, relay.
//! - [`session`]: session registry, termination codes, tcplog lines.
//! - [`affinity`]: switch-to-agent table and the peer sync protocol.
//! - [`admin`]: JSON-RPC admin API, Prometheus metrics, status tables.
//! - [`runtime`], [`server`]: shared state, reload, startup and signals.
//!
//! # Threads and memory
//!
//! `global.threads` data threads (default: one per CPU, as HAProxy's `nbthread`) each run one
//! event loop and accept from every listener (one socket, a descriptor per thread): the thread
//! that is free takes the next switch and a session never changes thread. The control plane
//! (health checks, readiness, admin API, peer links, the idle/fin sweeper, affinity upkeep)
//! runs on the main thread.
//! An idle passthrough session holds two sockets, a small task and no copy buffer and no timer:
//! buffers are lent only while bytes move ([`forward::bufpool`]) and idle/fin timeouts are
//! enforced by one periodic sweep ([`session::Sessions::sweep`]).
//!
//! # Readiness check contract (agent side)
//!
//! The proxy connects over plain TCP to the backend's `readiness_port`; the agent writes ONE
//! ASCII line ending in `\n` and closes. The line holds HAProxy agent-check words separated by
//! spaces or commas, parsed as HAProxy does (unknown words ignored, case-insensitive, text after
//! `#` is a description):
//!
//! - `ready`: takes new switches again (clears `drain`/`maint`);
//! - `drain`: healthy, keeps its switches, gets no new one (an agent that lost its control
//!   nodes says this);
//! - `maint`: no switch at all, its sessions are closed;
//! - `up`: the agent's own health is up;
//! - `down`, `fail`, `stopped`: marked down at once, its sessions are closed (code `D`);
//! - `NN%`: effective weight = NN % of the configured weight.
//!
//! A refused connection, a timeout or an empty line changes nothing: liveness is the active
//! health check's job. Examples: `ready up 100%\n`, `drain\n`, `down#no control node\n`.
//!
//! # Termination codes (one log line per session, HAProxy tcplog layout)
//!
//! `--` normal close; `CD`/`SD` client/server error or reset during data; `cD` idle timeout
//! (or client-side fin timeout); `sD` server did not finish after the client closed; `DD` killed
//! because the backend was marked down; `KD` killed by an operator or at shutdown; `SC` every
//! connect attempt failed; `PC` no backend available; `CR`/`cR` switch TLS handshake failed /
//! timed out (terminate mode).

pub mod admin;
pub mod affinity;
pub mod backend;
pub mod balance;
pub mod checks;
pub mod config;
pub mod forward;
pub mod health;
pub mod logging;
pub mod runtime;
pub mod server;
pub mod session;
pub mod tls;
