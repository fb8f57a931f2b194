//! Runtimes on threads of their own, for the parts of the runner whose timing must not
//! depend on how busy the runner is with thousands of simulated switches: the links (a
//! slow relay would look like a slow agent to the proxy's health checks), the observer
//! (its timestamps are the route history) and the monitor (its polls date the events).

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct SideRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl SideRuntime {
    /// Starts a current-thread runtime on a new thread named `name`.
    pub fn start(name: &str) -> std::io::Result<SideRuntime> {
        let (htx, hrx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = htx.send(Err(e));
                        return;
                    }
                };
                let _ = htx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropped here, on its own thread: its tasks are cancelled.
            })?;
        let handle = hrx
            .recv()
            .map_err(|_| std::io::Error::other("runtime thread died at start"))??;
        Ok(SideRuntime {
            handle,
            stop: Some(stop),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
