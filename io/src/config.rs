//! Runtime configuration: the declared options with their defaults, and the
//! validation that turns them into limits the cores rely on.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::StartError;

/// Which backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Probe io_uring; use it when it works, otherwise the portable backend.
    #[default]
    Auto,
    /// io_uring or a start error.
    Uring,
    /// The portable backend (epoll + ordinary file calls), always available.
    Portable,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(text: &str) -> Result<BackendChoice, String> {
        match text {
            "auto" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" => Ok(BackendChoice::Uring),
            "portable" | "epoll" => Ok(BackendChoice::Portable),
            other => Err(format!(
                "unknown backend {other:?} (expected auto, uring or portable)"
            )),
        }
    }
}

/// The backend a runtime actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// One io_uring per core.
    Uring,
    /// epoll per core, file calls on a bounded helper pool.
    Portable,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Uring => "io_uring",
            BackendKind::Portable => "portable (epoll)",
        })
    }
}

/// How listeners spread accepted connections over cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcceptMode {
    /// One `SO_REUSEPORT` listener per core; the kernel spreads connections.
    #[default]
    ReusePortPerCore,
    /// Core 0 accepts everything and hands each connection to the core with
    /// the fewest connections (better balance with few clients).
    SingleAcceptor,
}

/// Configuration of a [`crate::Runtime`]. Build it with `Default` and
/// struct update syntax; [`RuntimeConfig::validate`] checks it.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Worker threads, one per core (default: the available cores).
    pub core_count: usize,
    /// `auto`, `uring` or `portable`.
    pub backend: BackendChoice,
    /// Pin core thread `i` to the `i`-th allowed CPU (modulo their count).
    pub pin_threads: bool,
    /// Addresses to listen on; an `Accepted` event names the index here.
    /// Port 0 picks one port, shared by all cores.
    pub listen_addrs: Vec<SocketAddr>,
    /// How connections reach cores.
    pub accept_mode: AcceptMode,
    /// `listen(2)` backlog.
    pub listen_backlog: i32,
    /// Connections (accepted and connected) per core; beyond it new accepts
    /// are closed at once and `connect` fails.
    pub connections_max_per_core: usize,
    /// Handler-submitted operations in flight per core (sends, file ops,
    /// timers, connects); receives are counted per connection instead.
    pub ops_in_flight_max: usize,
    /// Sends queued on one connection (one is in flight at a time, so the
    /// byte stream keeps its order).
    pub sends_queued_max_per_connection: usize,
    /// Size of one receive buffer.
    pub recv_buffer_size_bytes: u32,
    /// Receive buffers per core (a power of two, at most 32768). When all are
    /// lent out the core stops receiving until some come back.
    pub recv_buffer_count: u16,
    /// io_uring submission queue entries per core (power of two).
    pub ring_entries: u32,
    /// Messages queued to one core from other threads ([`crate::CoreSender`]).
    pub mailbox_capacity: usize,
    /// Portable backend: threads doing blocking file calls, shared by cores.
    pub portable_file_threads: usize,
    /// io_uring backend: the most kernel workers (io-wq "bounded" workers)
    /// a core's ring may run blocking file operations on at once. The
    /// kernel's default is 4 per CPU; each `fsync` holds a worker for the
    /// whole device flush, so with many instances becoming durable at once
    /// a small pool queues renames and writes behind flushes and keeps
    /// fsyncs from being merged into one journal commit.
    pub uring_file_workers_max: u32,
    /// Re-arm `TCP_QUICKACK` after every receive (the kernel clears it), so
    /// a sender with Nagle on is acknowledged at once.
    pub quickack_after_recv: bool,
    /// How long shutdown waits for in-flight operations to drain before a
    /// core gives up (leaking, never freeing, the memory they reference).
    pub shutdown_drain_max: Duration,
    /// Test builds: the seeded fault plan.
    #[cfg(feature = "fault-injection")]
    pub fault_plan: Option<crate::fault::FaultPlan>,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            core_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: BackendChoice::Auto,
            pin_threads: true,
            listen_addrs: Vec::new(),
            accept_mode: AcceptMode::ReusePortPerCore,
            listen_backlog: 1024,
            connections_max_per_core: 16_384,
            ops_in_flight_max: 4096,
            sends_queued_max_per_connection: 64,
            recv_buffer_size_bytes: 32 * 1024,
            recv_buffer_count: 1024,
            ring_entries: 1024,
            mailbox_capacity: 4096,
            // Blocking fsyncs hold a thread each for a device flush: enough
            // threads that concurrent instances flush together.
            portable_file_threads: 32,
            uring_file_workers_max: 64,
            quickack_after_recv: false,
            shutdown_drain_max: Duration::from_secs(10),
            #[cfg(feature = "fault-injection")]
            fault_plan: None,
        }
    }
}

/// `IOV_MAX` on Linux: the most buffers one vectored write takes.
pub const IOVECS_PER_WRITE_MAX: usize = 1024;

impl RuntimeConfig {
    /// Checks the relationships between options.
    pub fn validate(&self) -> Result<(), StartError> {
        let invalid = |text: String| Err(StartError::InvalidConfig(text));
        if self.core_count == 0 || self.core_count > 1024 {
            return invalid(format!("core_count {} not in 1..=1024", self.core_count));
        }
        if !self.recv_buffer_count.is_power_of_two() || self.recv_buffer_count > 32768 {
            return invalid(format!(
                "recv_buffer_count {} must be a power of two, at most 32768",
                self.recv_buffer_count
            ));
        }
        if self.recv_buffer_size_bytes < 512 || self.recv_buffer_size_bytes > 16 * 1024 * 1024 {
            return invalid(format!(
                "recv_buffer_size_bytes {} not in 512..=16 MiB",
                self.recv_buffer_size_bytes
            ));
        }
        if !self.ring_entries.is_power_of_two() || !(8..=32768).contains(&self.ring_entries) {
            return invalid(format!(
                "ring_entries {} must be a power of two in 8..=32768",
                self.ring_entries
            ));
        }
        if self.connections_max_per_core == 0 || self.connections_max_per_core > 1 << 24 {
            return invalid("connections_max_per_core must be in 1..=16M".into());
        }
        if self.ops_in_flight_max == 0 || self.ops_in_flight_max > 1 << 24 {
            return invalid("ops_in_flight_max must be in 1..=16M".into());
        }
        if self.sends_queued_max_per_connection == 0 {
            return invalid("sends_queued_max_per_connection must be at least 1".into());
        }
        if self.mailbox_capacity == 0 {
            return invalid("mailbox_capacity must be at least 1".into());
        }
        if self.portable_file_threads == 0 || self.portable_file_threads > 256 {
            return invalid("portable_file_threads must be in 1..=256".into());
        }
        if self.listen_backlog <= 0 {
            return invalid("listen_backlog must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        RuntimeConfig::default().validate().unwrap();
    }

    #[test]
    fn buffer_count_must_be_power_of_two() {
        let config = RuntimeConfig {
            recv_buffer_count: 1000,
            ..RuntimeConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(StartError::InvalidConfig(_))
        ));
    }

    #[test]
    fn backend_choice_parses() {
        assert_eq!(
            "auto".parse::<BackendChoice>().unwrap(),
            BackendChoice::Auto
        );
        assert_eq!(
            "uring".parse::<BackendChoice>().unwrap(),
            BackendChoice::Uring
        );
        assert_eq!(
            "portable".parse::<BackendChoice>().unwrap(),
            BackendChoice::Portable
        );
        assert!("kqueue".parse::<BackendChoice>().is_err());
    }
}
