//! The embedded tokio runtime `rtc-io` that the business services run on.
//!
//! Owned by the host (the module, or `rtc-core esl`): started explicitly at load, shut down explicitly at
//! unload within a bound. Its threads are its own (named `rtc-io`); nothing here runs on a FreeSWITCH
//! thread, and FreeSWITCH threads only ever hand work to it (`Handle::spawn`), never wait on it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle, Runtime};

/// Name of every thread of the runtime (workers and blocking pool), as `top -H` and `gdb` show it.
pub const THREAD_NAME: &str = "rtc-io";

/// Runtime settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Worker threads. Two is plenty for HTTP services at a few hundred calls per second, and leaves
    /// FreeSWITCH its cores.
    pub worker_threads: usize,
    /// Upper bound on blocking-pool threads (spool writes, DNS lookups).
    pub max_blocking_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: 2,
            max_blocking_threads: 8,
        }
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No worker threads asked for.
    #[error("rtc-io runtime: worker threads must be at least 1 (set io-threads to 1 or more)")]
    NoWorkers,
    /// No blocking threads asked for.
    #[error("rtc-io runtime: blocking threads must be at least 1")]
    NoBlockingThreads,
    /// tokio would not build the runtime.
    #[error("cannot start the rtc-io runtime: {0}")]
    Build(#[source] std::io::Error),
}

/// Count of the runtime's live threads, so that shutdown can tell whether they are all gone.
#[derive(Debug, Default)]
struct LiveThreads {
    /// Threads started and not yet stopped.
    count: Mutex<usize>,
    /// Signalled when a thread stops.
    stopped: Condvar,
}

impl LiveThreads {
    fn add(&self, delta: isize) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_add_signed(delta);
        self.stopped.notify_all();
    }

    fn get(&self) -> usize {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no thread is left or `deadline` passes; true when none is left.
    fn wait_none(&self, deadline: Instant) -> bool {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            count = match self.stopped.wait_timeout(count, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

/// The running `rtc-io` runtime. Dropping it without [`IoRuntime::shutdown`] shuts it down without bound
/// (tokio's drop waits for blocking tasks): call `shutdown`.
#[derive(Debug)]
pub struct IoRuntime {
    /// The runtime itself.
    runtime: Runtime,
    /// Its live threads.
    live: Arc<LiveThreads>,
}

impl IoRuntime {
    /// Starts the runtime's threads.
    pub fn start(config: &RuntimeConfig) -> Result<IoRuntime, RuntimeError> {
        if config.worker_threads == 0 {
            return Err(RuntimeError::NoWorkers);
        }
        if config.max_blocking_threads == 0 {
            return Err(RuntimeError::NoBlockingThreads);
        }
        let live = Arc::new(LiveThreads::default());
        let (on_start, on_stop) = (live.clone(), live.clone());
        let runtime = Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .max_blocking_threads(config.max_blocking_threads)
            .thread_name(THREAD_NAME)
            .on_thread_start(move || on_start.add(1))
            .on_thread_stop(move || on_stop.add(-1))
            .enable_io()
            .enable_time()
            .build()
            .map_err(RuntimeError::Build)?;
        Ok(IoRuntime { runtime, live })
    }

    /// Where work is spawned from any thread.
    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// Threads of the runtime currently alive (workers and blocking pool).
    pub fn live_threads(&self) -> usize {
        self.live.get()
    }

    /// Stops the runtime: running tasks are cancelled at their next await, and the call waits at most
    /// `timeout` for every thread to end. Returns whether all ended in time; when not, some task is stuck
    /// in blocking code and its thread still runs (the module must then not be unloaded from memory).
    /// Must not be called from inside the runtime.
    pub fn shutdown(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let live = self.live.clone();
        self.runtime.shutdown_timeout(timeout);
        let done = live.wait_none(deadline);
        if !done {
            log::warn!(
                "rtc-io runtime: {} thread(s) still running {timeout:?} after shutdown began (a task is blocked)",
                live.get()
            );
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_tasks_on_named_threads_and_shuts_down_in_time() {
        let rt = IoRuntime::start(&RuntimeConfig::default()).unwrap();
        let name = rt
            .handle()
            .block_on(async {
                tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
                    .await
                    .unwrap()
            })
            .unwrap();
        assert_eq!(name, THREAD_NAME);
        // Workers start as the runtime wakes them: at least the one that ran the task is up.
        assert!(rt.live_threads() >= 1);
        // A task that would run forever is cancelled.
        rt.handle().spawn(async {
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        let started = Instant::now();
        assert!(rt.shutdown(Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn reports_a_thread_stuck_in_blocking_code() {
        let rt = IoRuntime::start(&RuntimeConfig {
            worker_threads: 1,
            max_blocking_threads: 1,
        })
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        rt.handle().spawn_blocking(move || {
            let _ = started_tx.send(());
            // Blocks until the test lets it go (after the shutdown bound).
            let _ = rx.recv();
        });
        started_rx.recv().unwrap();
        let started = Instant::now();
        assert!(!rt.shutdown(Duration::from_millis(100)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(tx);
    }

    #[test]
    fn zero_workers_is_refused_with_advice() {
        let err = IoRuntime::start(&RuntimeConfig {
            worker_threads: 0,
            max_blocking_threads: 1,
        })
        .unwrap_err();
        assert!(err.to_string().contains("at least 1"));
    }
}
