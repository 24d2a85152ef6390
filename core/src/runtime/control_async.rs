//! The control core's async runtime: where slow network work that is not on a shard runs.
//!
//! ACME orders (instant-acme), outbound mail delivery, DNS lookups for mail authentication
//! and the admin API are async code written for tokio. They run here, on one tokio
//! current-thread runtime on its own thread ("control-async"), pinned to the control CPU when
//! there is one — never on a shard, so a slow CA or mail server cannot stall the hot path.
//!
//! The control core ([`super::control::ControlCore`]) owns the [`ControlAsync`] handle and
//! spawns tasks through it; tasks report back to the control loop with
//! [`super::messages::ToControl`] messages on the control inbox, so all state changes stay in
//! one thread. Dropping the handle stops the runtime (pending tasks are cancelled).

use std::future::Future;

/// Handle to the control core's tokio runtime thread.
#[derive(Debug)]
pub struct ControlAsync {
    handle: tokio::runtime::Handle,
    /// Dropping the sender ends the runtime thread's `block_on`.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlAsync {
    /// Starts the runtime thread, pinned to `cpu` when given.
    pub fn start(cpu: Option<usize>) -> std::io::Result<ControlAsync> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().thread_name("control-async").build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("control-async".into()).spawn(move || {
            if let Some(cpu) = cpu {
                super::cpu::pin_current_thread(cpu);
            }
            runtime.block_on(async {
                let _ = stopped.await;
            });
            // Cancels what is still pending without waiting for it.
            runtime.shutdown_background();
        })?;
        Ok(ControlAsync { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Runs `task` on the control core's runtime.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// The tokio handle, for libraries that want one.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for ControlAsync {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_tasks_run_and_report_back() {
        let runtime = ControlAsync::start(None).expect("start");
        let (tx, rx) = crossbeam_channel::bounded(1);
        runtime.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let _ = tx.send(42);
        });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok(42));
        drop(runtime);
    }
}
