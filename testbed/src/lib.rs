//! The testbed: simulated switches, the simulated TF control node, the scenario runner and the demo.

pub mod control_node;
pub mod scenario;
pub mod switch;
