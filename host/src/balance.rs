//! The balancer task: runs this host's `balancer::Balancer`.

use tokio::sync::mpsc;

/// Input to the balancer task.
pub enum Input {}

/// The handle on the balancer task.
#[derive(Clone)]
pub struct Handle {
    tx: Option<mpsc::Sender<Input>>,
}

impl Handle {
    /// A handle on no task (balancing off until one is started).
    pub fn detached() -> Handle {
        Handle { tx: None }
    }
}
