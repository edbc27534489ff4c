//! Choosing the backend at start: probe io_uring for everything the runtime
//! uses, then decide from the configured choice. The caller logs the outcome
//! in one line.

use crate::buf::Pool;
use crate::config::{BackendChoice, BackendKind};
use crate::error::StartError;

/// Opcodes the runtime submits.
const OPCODES_NEEDED: [(u8, &str); 15] = [
    (io_uring::opcode::AcceptMulti::CODE, "ACCEPT"),
    (io_uring::opcode::RecvMulti::CODE, "RECV"),
    (io_uring::opcode::Send::CODE, "SEND"),
    (io_uring::opcode::Connect::CODE, "CONNECT"),
    (io_uring::opcode::OpenAt::CODE, "OPENAT"),
    (io_uring::opcode::Writev::CODE, "WRITEV"),
    (io_uring::opcode::Fsync::CODE, "FSYNC"),
    (io_uring::opcode::RenameAt::CODE, "RENAMEAT"),
    (io_uring::opcode::MkDirAt::CODE, "MKDIRAT"),
    (io_uring::opcode::UnlinkAt::CODE, "UNLINKAT"),
    (io_uring::opcode::Close::CODE, "CLOSE"),
    (io_uring::opcode::Timeout::CODE, "TIMEOUT"),
    (io_uring::opcode::TimeoutRemove::CODE, "TIMEOUT_REMOVE"),
    (io_uring::opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (io_uring::opcode::Read::CODE, "READ"),
];

/// Multishot receive with provided-buffer rings needs Linux 6.0.
const KERNEL_VERSION_MIN: (u32, u32) = (6, 0);

fn errno_text(errno: i32) -> String {
    let hint = match errno {
        libc::EPERM => " (blocked by seccomp, or kernel.io_uring_disabled)",
        libc::ENOSYS => " (kernel built without io_uring, or filtered)",
        libc::ENOMEM => " (locked-memory limit too low)",
        _ => "",
    };
    format!("{}{hint}", std::io::Error::from_raw_os_error(errno))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Probes io_uring: `Ok(details)` when every feature the runtime uses works,
/// `Err(reason)` otherwise. `simulated_errno` makes it fail as
/// `io_uring_setup` would (fault seam).
pub(crate) fn probe_uring(simulated_errno: Option<i32>) -> Result<String, String> {
    if let Some(errno) = simulated_errno {
        return Err(format!(
            "io_uring_setup failed: {} [simulated]",
            errno_text(errno)
        ));
    }
    let release = kernel_release();
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if text.trim() == "2" {
            return Err("io_uring is disabled by sysctl kernel.io_uring_disabled=2".into());
        }
    }
    if let Some(version) = parse_version(&release) {
        if version < KERNEL_VERSION_MIN {
            return Err(format!(
                "kernel {release} lacks multishot receive (needs {}.{})",
                KERNEL_VERSION_MIN.0, KERNEL_VERSION_MIN.1
            ));
        }
    }
    let ring = io_uring::IoUring::new(8).map_err(|error| {
        format!(
            "io_uring_setup failed: {}",
            errno_text(error.raw_os_error().unwrap_or(libc::EIO))
        )
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|error| format!("io_uring opcode probe failed: {error}"))?;
    let missing: Vec<&str> = OPCODES_NEEDED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "kernel {release} lacks io_uring operations {}",
            missing.join(", ")
        ));
    }
    let pool = Pool::with_ring(4096, 8)
        .map_err(|error| format!("buffer ring allocation failed: {error}"))?;
    let ring_address = pool.ring_address().ok_or("buffer ring missing")?;
    // SAFETY: the ring memory (8 entries) belongs to `pool`, which is dropped
    // only after the buffer group is unregistered and the ring dropped (the
    // explicit drops below); if registration fails nothing refers to it.
    let registered = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(ring_address, 8, 0, 0)
    };
    registered.map_err(|error| format!("provided-buffer rings unsupported: {error}"))?;
    let _ = ring.submitter().unregister_buf_ring(0);
    drop(ring);
    drop(pool);
    Ok(format!("kernel {release}"))
}

/// Decides the backend from the configured choice and a probe.
pub(crate) fn select_backend(
    choice: BackendChoice,
    probe: impl FnOnce() -> Result<String, String>,
) -> Result<(BackendKind, String), StartError> {
    match choice {
        BackendChoice::Portable => Ok((
            BackendKind::Portable,
            "forced by configuration (backend = portable)".into(),
        )),
        BackendChoice::Uring => match probe() {
            Ok(details) => Ok((
                BackendKind::Uring,
                format!("forced by configuration (backend = uring), {details}"),
            )),
            Err(reason) => Err(StartError::UringUnavailable { reason }),
        },
        BackendChoice::Auto => match probe() {
            Ok(details) => Ok((BackendKind::Uring, format!("probe succeeded, {details}"))),
            Err(reason) => Ok((
                BackendKind::Portable,
                format!("io_uring unusable: {reason}"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_when_probe_fails() {
        let (kind, reason) = select_backend(BackendChoice::Auto, || Err("EPERM".into())).unwrap();
        assert_eq!(kind, BackendKind::Portable);
        assert!(reason.contains("EPERM"));
    }

    #[test]
    fn forced_uring_fails_clearly() {
        let error = select_backend(BackendChoice::Uring, || Err("ENOSYS".into())).unwrap_err();
        assert!(matches!(error, StartError::UringUnavailable { .. }));
        assert!(error.to_string().contains("ENOSYS"));
    }

    #[test]
    fn forced_portable_does_not_probe() {
        let (kind, _) = select_backend(BackendChoice::Portable, || panic!("probed")).unwrap();
        assert_eq!(kind, BackendKind::Portable);
    }

    #[test]
    fn simulated_probe_failure_names_the_errno() {
        let reason = probe_uring(Some(libc::EPERM)).unwrap_err();
        assert!(reason.contains("seccomp"), "{reason}");
    }

    #[test]
    fn kernel_version_parses() {
        assert_eq!(parse_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_version("5.15.0"), Some((5, 15)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn this_machine_probes_io_uring() {
        // The development machine and CI run a 6.x kernel with io_uring
        // enabled; every integration test also runs the io_uring backend.
        assert!(probe_uring(None).is_ok(), "{:?}", probe_uring(None));
    }
}
