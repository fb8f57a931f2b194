//! The admin API methods: what `tor-agent status` and operators call.

use jsonrpsee::core::{async_trait, RpcResult};
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;
use tokio::sync::{mpsc, oneshot};

use super::status::{AgentStatus, SwitchStatus};
use crate::runtime::Event;

#[rpc(server, client)]
pub trait AdminApi {
    /// Everything `status` shows.
    #[method(name = "status")]
    async fn status(&self) -> RpcResult<AgentStatus>;

    /// One switch: its mastership on this agent, session and takeovers.
    #[method(name = "switch")]
    async fn switch(&self, name: String) -> RpcResult<SwitchStatus>;

    /// `ready`, `drain` or `down`, as the proxy's agent check sees it.
    #[method(name = "readiness")]
    async fn readiness(&self) -> RpcResult<String>;
}

pub struct AdminImpl {
    pub events: mpsc::UnboundedSender<Event>,
}

fn unavailable() -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32000, "agent is stopping", None::<()>)
}

impl AdminImpl {
    async fn snapshot(&self) -> RpcResult<AgentStatus> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Status(tx))
            .map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())
    }
}

#[async_trait]
impl AdminApiServer for AdminImpl {
    async fn status(&self) -> RpcResult<AgentStatus> {
        self.snapshot().await
    }

    async fn switch(&self, name: String) -> RpcResult<SwitchStatus> {
        let s = self.snapshot().await?;
        s.switches
            .into_iter()
            .find(|w| w.name == name)
            .ok_or_else(|| {
                ErrorObjectOwned::owned(-32602, format!("no switch named {name}"), None::<()>)
            })
    }

    async fn readiness(&self) -> RpcResult<String> {
        Ok(self.snapshot().await?.readiness)
    }
}
