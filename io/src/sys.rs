//! Thin wrappers over the system calls the runtime makes directly (epoll,
//! eventfd, the portable backend's socket and file calls, CPU pinning).
//! Results carry the positive `errno` so they feed the same completion path
//! as io_uring's negative `res`.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `Ok(value)` or the positive errno.
pub(crate) type SysResult<T> = Result<T, i32>;

pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(result: libc::c_int) -> SysResult<libc::c_int> {
    if result < 0 {
        Err(last_errno())
    } else {
        Ok(result)
    }
}

fn check_size(result: libc::ssize_t) -> SysResult<usize> {
    usize::try_from(result).map_err(|_| last_errno())
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: callers pass a descriptor the kernel just returned to us (from
    // eventfd, epoll_create1, accept4 or openat) that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An eventfd; blocking for io_uring (a read on an `O_NONBLOCK` file would
/// fail with EAGAIN instead of waiting), non-blocking for epoll.
pub(crate) fn eventfd(nonblocking: bool) -> std::io::Result<OwnedFd> {
    let flags = libc::EFD_CLOEXEC | if nonblocking { libc::EFD_NONBLOCK } else { 0 };
    // SAFETY: plain system call without pointers.
    let fd =
        check(unsafe { libc::eventfd(0, flags) }).map_err(std::io::Error::from_raw_os_error)?;
    Ok(owned(fd))
}

/// Adds 1 to an eventfd, waking its reader.
pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local `u64`. A full counter
    // (EAGAIN) already means "wake", so the result is not needed.
    let _ = unsafe { libc::write(fd, (&raw const one).cast(), size_of::<u64>()) };
}

/// Resets a non-blocking eventfd.
pub(crate) fn eventfd_drain(fd: RawFd) {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a live local `u64`.
    let _ = unsafe { libc::read(fd, (&raw mut value).cast(), size_of::<u64>()) };
}

pub(crate) fn epoll_create() -> std::io::Result<OwnedFd> {
    // SAFETY: plain system call without pointers.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .map_err(std::io::Error::from_raw_os_error)?;
    Ok(owned(fd))
}

pub(crate) fn epoll_add(epoll: &OwnedFd, fd: RawFd, events: u32, token: u64) -> SysResult<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is a live local the kernel reads during the call.
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) })
        .map(drop)
}

pub(crate) fn epoll_delete(epoll: &OwnedFd, fd: RawFd) {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: as in `epoll_add`; an fd that was never added gives ENOENT,
    // which is fine to ignore.
    let _ = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
}

pub(crate) fn epoll_wait(
    epoll: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> SysResult<usize> {
    let capacity = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the kernel writes at most `capacity` entries into `events`,
    // which has that many.
    let count = check(unsafe {
        libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), capacity, timeout_ms)
    })?;
    Ok(count as usize)
}

/// `recv(2)` without blocking.
///
/// # Safety
/// `buffer` must be valid for writes of `length` bytes, with no other
/// reference to that memory during the call.
pub(crate) unsafe fn recv(fd: RawFd, buffer: *mut u8, length: usize) -> SysResult<usize> {
    // SAFETY: the caller guarantees `buffer..buffer+length` is writable.
    check_size(unsafe { libc::recv(fd, buffer.cast(), length, libc::MSG_DONTWAIT) })
}

/// `send(2)` without blocking or SIGPIPE.
///
/// # Safety
/// `buffer` must be valid for reads of `length` bytes during the call.
pub(crate) unsafe fn send(fd: RawFd, buffer: *const u8, length: usize) -> SysResult<usize> {
    // SAFETY: the caller guarantees `buffer..buffer+length` is readable.
    check_size(unsafe {
        libc::send(
            fd,
            buffer.cast(),
            length,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// `accept4(2)` of a non-blocking, close-on-exec socket.
pub(crate) fn accept(listener: RawFd) -> SysResult<OwnedFd> {
    // SAFETY: null address pointers are allowed (the peer is not wanted here).
    let fd = check(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    Ok(owned(fd))
}

/// `connect(2)`.
///
/// # Safety
/// `address` must point at `length` valid bytes of a socket address.
pub(crate) unsafe fn connect(
    fd: RawFd,
    address: *const libc::sockaddr,
    length: libc::socklen_t,
) -> SysResult<()> {
    // SAFETY: the caller guarantees the address.
    check(unsafe { libc::connect(fd, address, length) }).map(drop)
}

/// The pending error of a socket (`SO_ERROR`), 0 when none.
pub(crate) fn socket_error(fd: RawFd) -> i32 {
    let mut value: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `length` bytes into the live local.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut value).cast(),
            &mut length,
        )
    };
    if result < 0 {
        last_errno()
    } else {
        value
    }
}

/// Sets an integer socket option.
pub(crate) fn set_socket_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> SysResult<()> {
    // SAFETY: the kernel reads `size_of::<c_int>()` bytes from the live local.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `pwritev(2)`.
///
/// # Safety
/// `iovecs` must point at `count` iovecs whose buffers are readable for
/// their lengths during the call.
pub(crate) unsafe fn pwritev(
    fd: RawFd,
    iovecs: *const libc::iovec,
    count: usize,
    offset: u64,
) -> SysResult<usize> {
    let count = libc::c_int::try_from(count).map_err(|_| libc::EINVAL)?;
    let offset = libc::off_t::try_from(offset).map_err(|_| libc::EFBIG)?;
    // SAFETY: the caller guarantees the iovecs and their buffers.
    check_size(unsafe { libc::pwritev(fd, iovecs, count, offset) })
}

/// `preadv(2)`.
///
/// # Safety
/// `iovecs` must point at `count` iovecs whose buffers are writable for
/// their lengths during the call, and not accessed by anything else.
pub(crate) unsafe fn preadv(
    fd: RawFd,
    iovecs: *const libc::iovec,
    count: usize,
    offset: u64,
) -> SysResult<usize> {
    let count = libc::c_int::try_from(count).map_err(|_| libc::EINVAL)?;
    let offset = libc::off_t::try_from(offset).map_err(|_| libc::EFBIG)?;
    // SAFETY: the caller guarantees the iovecs and their buffers.
    check_size(unsafe { libc::preadv(fd, iovecs, count, offset) })
}

pub(crate) fn fsync(fd: RawFd, data_only: bool) -> SysResult<()> {
    // SAFETY: plain system calls without pointers.
    check(unsafe {
        if data_only {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
    .map(drop)
}

pub(crate) fn openat(dir: RawFd, path: &CStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    // SAFETY: `path` is a NUL-terminated string alive during the call.
    let fd = check(unsafe { libc::openat(dir, path.as_ptr(), flags, mode) })?;
    Ok(owned(fd))
}

pub(crate) fn renameat(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> SysResult<()> {
    // SAFETY: both paths are NUL-terminated strings alive during the call.
    check(unsafe { libc::renameat(old_dir, old.as_ptr(), new_dir, new.as_ptr()) }).map(drop)
}

pub(crate) fn mkdirat(dir: RawFd, path: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `path` is a NUL-terminated string alive during the call.
    check(unsafe { libc::mkdirat(dir, path.as_ptr(), mode) }).map(drop)
}

pub(crate) fn unlinkat(dir: RawFd, path: &CStr, flags: i32) -> SysResult<()> {
    // SAFETY: `path` is a NUL-terminated string alive during the call.
    check(unsafe { libc::unlinkat(dir, path.as_ptr(), flags) }).map(drop)
}

/// Closes a descriptor whose ownership the caller gave up.
pub(crate) fn close(fd: RawFd) -> SysResult<()> {
    // SAFETY: the caller owned `fd` (it came from `OwnedFd::into_raw_fd`)
    // and nothing uses it afterwards.
    check(unsafe { libc::close(fd) }).map(drop)
}

/// CPUs this process may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes into
    // the live local.
    let result = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if result < 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu < CPU_SETSIZE`, the size of the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) -> SysResult<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(libc::EINVAL);
    }
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE` was checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the kernel reads the live local set.
    check(unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) }).map(drop)
}

/// The locked-memory limit (`RLIMIT_MEMLOCK`), soft and hard, in bytes
/// (`None`: unlimited, or unknown).
pub(crate) fn memlock_limit() -> (Option<u64>, Option<u64>) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return (None, None);
    }
    let bytes = |value: libc::rlim_t| (value != libc::RLIM_INFINITY).then_some(value);
    (bytes(limit.rlim_cur), bytes(limit.rlim_max))
}
