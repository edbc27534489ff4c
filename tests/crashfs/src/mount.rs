//! Mounting the crash file system and controlling it from the test: arm or
//! make a power cut, wait for it, unmount, and mount what survived.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::fuse::{CrashFs, Shared};
use crate::model::{CutSummary, Image, Model, PowerLoss, Stats};

/// Room for file data when none is given: far more than a test writes, so
/// statvfs never stands in the way unless a test asks for a small disk.
pub const CAPACITY_BYTES_DEFAULT: u64 = 64 << 30;

/// How long [`Mounted::unmount`] retries a mount the kernel still holds
/// busy after its last user exited.
pub const UNMOUNT_BUSY_WAIT: Duration = Duration::from_secs(10);

/// A mounted crash file system. Dropping it unmounts (lazily, so a process
/// still holding a file there cannot make the drop fail).
#[derive(Debug)]
pub struct Mounted {
    session: Option<BackgroundSession>,
    shared: Arc<Shared>,
    mountpoint: PathBuf,
}

/// Why a mount or an unmount failed.
#[derive(Debug)]
pub struct MountError {
    /// What was being done.
    pub operation: &'static str,
    /// The mount point.
    pub mountpoint: PathBuf,
    /// What the kernel or fuser said.
    pub source: std::io::Error,
}

impl std::fmt::Display for MountError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "cannot {} the crash file system at {}: {} (it needs /dev/fuse and root, \
             or fusermount3 from Debian's fuse3: scripts/test installs it)",
            self.operation,
            self.mountpoint.display(),
            self.source
        )
    }
}

impl std::error::Error for MountError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Mounted {
    /// Mounts a file system holding `image` (all durable) at `mountpoint`,
    /// an existing empty directory.
    pub fn mount(
        image: Image,
        mountpoint: &Path,
        capacity_bytes: u64,
    ) -> Result<Mounted, MountError> {
        let shared = Arc::new(Shared {
            model: Mutex::new(Model::new(image, capacity_bytes)),
            cut_happened: Condvar::new(),
            dsync_follow_ups: Mutex::new(HashSet::new()),
        });
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("sluice-crashfs".to_owned()),
            MountOption::Subtype("crashfs".to_owned()),
            MountOption::NoAtime,
        ];
        config.acl = SessionACL::All;
        let filesystem = CrashFs {
            shared: Arc::clone(&shared),
        };
        let session =
            fuser::spawn_mount(filesystem, mountpoint, &config).map_err(|source| MountError {
                operation: "mount",
                mountpoint: mountpoint.to_owned(),
                source,
            })?;
        Ok(Mounted {
            session: Some(session),
            shared,
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Mounts an empty file system.
    pub fn mount_empty(mountpoint: &Path) -> Result<Mounted, MountError> {
        Mounted::mount(Image::empty(), mountpoint, CAPACITY_BYTES_DEFAULT)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// What the file system was asked to do so far.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// Arms a power cut before mutation number `mutation` since the mount.
    pub fn arm_cut(&self, mutation: u64, loss: PowerLoss) {
        self.shared.lock().arm_cut(mutation, loss);
    }

    /// Makes everything durable (a whole journal commit); see
    /// [`Model::sync_all`](crate::model::Model::sync_all).
    pub fn sync_all(&self) {
        // Only fails after a cut, when there is nothing left to settle.
        let _ = self.shared.lock().sync_all();
    }

    /// Cuts the power now (or keeps an armed cut that already happened).
    pub fn cut_now(&self, loss: PowerLoss) -> CutSummary {
        let mut model = self.shared.lock();
        let summary = model.power_cut(loss).1;
        self.shared.cut_happened.notify_all();
        summary
    }

    /// Waits up to `timeout` for an armed cut; true once the power is off.
    pub fn wait_for_cut(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut model = self.shared.lock();
        while !model.is_cut() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            model = match self.shared.cut_happened.wait_timeout(model, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// True once the power is off.
    pub fn is_cut(&self) -> bool {
        self.shared.lock().is_cut()
    }

    /// Unmounts; after a cut, returns what survived it. Every process that
    /// had files open here must have exited (the test kills the server
    /// first), else the kernel keeps the mount busy and this fails.
    ///
    /// The kernel may keep the mount busy for a moment after the last such
    /// process was reaped (io_uring releases a dead ring's files from a
    /// kernel worker): as root, a busy mount is retried for up to
    /// [`UNMOUNT_BUSY_WAIT`] (without it, one round of a long run on a
    /// loaded machine failed "busy").
    pub fn unmount(mut self) -> Result<Option<(Image, CutSummary)>, MountError> {
        let error = |source| MountError {
            operation: "unmount",
            mountpoint: self.mountpoint.clone(),
            source,
        };
        if let Some(session) = self.session.take() {
            let started = Instant::now();
            loop {
                match rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::empty())
                {
                    // Unmounted: the session's thread ends (fuser's own
                    // unmount, when the session drops, finds nothing to do).
                    Ok(()) => {
                        match session.join() {
                            Ok(()) => {}
                            // The kernel may end the connection of a mount
                            // it just took down with ECONNABORTED rather
                            // than ENODEV (fuser takes only the latter as
                            // the end): the file system is unmounted and its
                            // state is here, so this is the session's end
                            // too (seen once in a CI run, on the segment
                            // power-loss test's second mount).
                            Err(join)
                                if join.raw_os_error()
                                    == Some(rustix::io::Errno::CONNABORTED.raw_os_error()) => {}
                            Err(join) => return Err(error(join)),
                        }
                        break;
                    }
                    Err(rustix::io::Errno::BUSY) if started.elapsed() < UNMOUNT_BUSY_WAIT => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    // Not root: fusermount3 unmounts.
                    Err(rustix::io::Errno::PERM) => {
                        session.umount_and_join().map_err(error)?;
                        break;
                    }
                    Err(errno) => return Err(error(errno.into())),
                }
            }
        }
        Ok(self.shared.lock().cut_result().cloned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Never leave a mount behind a failed test: if a process still
            // holds it, detach it (the kernel ends it when the last user
            // goes); errors have nowhere to go from here.
            if session.umount_and_join().is_err() {
                let _ =
                    rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}
