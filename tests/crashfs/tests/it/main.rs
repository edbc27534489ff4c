//! The crash file system's tests (through real FUSE mounts) and Sluice's
//! power-loss test. They mount with /dev/fuse, so they need root (CI runs
//! as root) or fusermount3 (Debian's fuse3, installed by scripts/test).

mod fs;
mod power_loss;
mod seal;
mod segments;
