//! Reconciling a switch's database with what config and routes ask for.

pub mod plan;
pub mod switch_db;

pub use plan::{
    ls_name, vn_of_ls_name, PlanInput, PlanSettings, PlannedTxn, Planner, TxnId, TxnSummary,
};
pub use switch_db::{MacRow, SwitchDb, Touched, MONITORED};
