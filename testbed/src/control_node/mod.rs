//! The simulated Tungsten Fabric control node: the CN side of `shared/XMPP.md`.
//!
//! * [`fabric`]: the TOML fabric description and the IFMap config graph pushed to agents.
//! * [`route_table`]: paths per (VRF, key) from every agent and best-path selection (§6). Pure.
//! * [`core`]: the protocol state machine (subscriptions, publish/collection, validation,
//!   EndOfRib, config changes). Pure, time passed in.
//! * [`server`]: listener and session tasks, and [`ControlNodeHandle`] for in-process use.
//! * [`admin`]: the jsonrpsee admin API and the status tables.

pub mod admin;
pub mod core;
pub mod fabric;
pub mod route_table;
pub mod server;

pub use self::core::{AgentInfo, CoreSettings, Counters};
pub use fabric::{
    Binding, Fabric, FabricError, PhysicalRouter, VirtualNetwork, VirtualRouter, VxlanMode,
};
pub use route_table::{BestRoute, PathInfo, RouteKey};
pub use server::{start, ControlNodeConfig, ControlNodeHandle};
