//! JSON-RPC 1.0 as OVSDB speaks it: stream framing and messages.

pub mod backoff;
pub mod framing;
pub mod message;
pub mod probe;

pub use backoff::Backoff;
pub use framing::{FramingError, JsonFramer, DEFAULT_MAX_MESSAGE};
pub use message::{error_response, notification, request, response, Message, MessageError};
pub use probe::{InactivityProbe, ProbeAction};
