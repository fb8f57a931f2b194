//! The OVSDB client: sessions over any transport, request multiplexing,
//! transactions, monitors feeding a replica, and active reconnection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ovsdb::client::{Client, MonitorSpec, SessionOptions, TableMonitor};
//! use ovsdb::transport::{connect, Target};
//! let stream = connect(&"tcp:127.0.0.1:6640".parse::<Target>()?, None).await?;
//! let (client, mut events) = Client::start(stream, SessionOptions::default());
//! client.get_schema("hardware_vtep").await?;
//! client
//!     .monitor_cond("hardware_vtep", &MonitorSpec::new().table("Ucast_Macs_Local", TableMonitor::all()))
//!     .await?;
//! while let Some(ev) = events.recv().await {
//!     println!("{ev:?}");
//! }
//! # Ok(()) }
//! ```

mod active;
mod decode;
mod monitor;
mod replica;
mod session;
mod transact;

pub use active::Reconnector;
pub use decode::decode_monitor_reply_frame;
pub use monitor::{MonitorSpec, Select, TableMonitor};
pub use replica::{ChangeKind, Replica, ReplicaError, RowEvent, TableReplica};
pub use session::{Client, ClientError, MonitorStarted, SessionEvent, SessionOptions};
pub use transact::{
    typed_row, Condition, Function, InsertHandle, Mutation, Mutator, OpError, OpResult, Operation,
    RowValues, TransactOutcome, Transaction, WaitUntil,
};
