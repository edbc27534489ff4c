//! Completing: a backend's completion finds its operation, counts down the
//! parts it waits for, and once the last is in becomes the handler's event
//! (here for files, writes and timers; connections in `connections`,
//! receives in `receive`, accepts in `accept`).

use super::ops::{OpBody, TimerPurpose};
use super::Core;
use crate::backend::op::{self, Completion, CANCEL_USER_DATA};
use crate::error::{IoError, OpKind};
use crate::event::{Event, FileHandle};
use crate::slab::Key;

impl Core {
    /// Returns a buffer named by a completion nobody will consume.
    pub(super) fn discard_buffer(&self, completion: &Completion) {
        if let Some(buffer_id) = completion.buffer_id() {
            let length = u32::try_from(completion.result.max(0)).unwrap_or(0);
            let leased = self.pool.lease(buffer_id, length);
            debug_assert!(leased.is_some(), "completion named a buffer not free");
            drop(leased);
        }
    }

    /// Processes one completion from the backend (or made up locally).
    pub(super) fn complete(&mut self, completion: Completion) {
        if completion.user_data == CANCEL_USER_DATA {
            return;
        }
        debug_assert_ne!(
            completion.user_data,
            op::WAKE_USER_DATA,
            "the backend passed its wake-up on as a completion"
        );
        let (key, part) = op::decode_user_data(completion.user_data);
        let Some(entry) = self.ops.get_mut(key) else {
            // Every part of an operation completes exactly once and the
            // entry waits for all of them, so this is a backend bug.
            debug_assert!(false, "completion for an unknown operation: {completion:?}");
            self.discard_buffer(&completion);
            tracing::debug!(
                user_data = completion.user_data,
                "completion for an unknown operation"
            );
            return;
        };
        debug_assert!(entry.parts > 0, "completion beyond the parts issued");
        if entry.body.is_multishot() {
            if !completion.more() {
                entry.parts = entry.parts.saturating_sub(1);
            }
            return match entry.body {
                OpBody::Accept { listener } => self.on_accept(key, listener, completion),
                OpBody::Recv { conn } => self.on_recv(key, conn, completion),
                _ => {}
            };
        }
        /// Which completion logic applies once every part is in.
        enum Next {
            Send,
            Splice,
            RecvInto,
            Connect,
            Write,
            Read,
            Timer,
            File,
        }
        let next = match &mut entry.body {
            OpBody::Write(write) => {
                if let Some(slot) = write.results.get_mut(usize::from(part)) {
                    *slot = Some(completion.result);
                }
                Next::Write
            }
            OpBody::Read(_) => Next::Read,
            OpBody::Send { .. } => Next::Send,
            OpBody::Splice(op) => {
                op.completed(part, completion.result);
                Next::Splice
            }
            OpBody::RecvInto { .. } => Next::RecvInto,
            OpBody::Connect { .. } => Next::Connect,
            OpBody::Timer { .. } => Next::Timer,
            _ => Next::File,
        };
        entry.parts = entry.parts.saturating_sub(1);
        let parts_left = entry.parts;
        self.discard_buffer(&completion);
        if parts_left > 0 {
            return;
        }
        match next {
            Next::Send => self.on_send(key, completion.result),
            Next::Splice => self.on_splice(key),
            Next::RecvInto => self.on_recv_into(key, completion.result),
            Next::Connect => self.on_connect(key, completion.result),
            Next::Write => self.on_write(key),
            Next::Read => self.on_read(key, completion.result),
            Next::Timer => self.on_timer(key, completion.result),
            Next::File => self.on_file_op(key, completion.result),
        }
    }

    fn on_write(&mut self, key: Key) {
        let shutting_down = self.shutting_down;
        let Some(OpBody::Write(write)) = self.ops.get_mut(key).map(|entry| &mut entry.body) else {
            return;
        };
        let write_result = write.results[0].take();
        let sync_result = write.results[1].take();
        let failure = match (write_result, sync_result) {
            (Some(result), _) if result < 0 => Some(IoError::new(OpKind::Write, -result)),
            (_, Some(result)) if result < 0 && result != -libc::ECANCELED => {
                // An fsync error is final: never retried into a success.
                Some(IoError::new(OpKind::Sync, -result))
            }
            (Some(0), _) if !write.bytes_done() => Some(IoError::new(OpKind::Write, libc::EIO)),
            _ => None,
        };
        if failure.is_none() {
            if let Some(bytes) = write_result {
                write.advance(bytes as u64);
            }
            let needs_sync = write.sync.is_some() && sync_result != Some(0);
            let unfinished = !write.bytes_done() || needs_sync;
            if unfinished && shutting_down {
                // Cancelled by shutdown: report it, do not resubmit.
                let op = if write.bytes_done() {
                    OpKind::Sync
                } else {
                    OpKind::Write
                };
                let Some(OpBody::Write(write)) = self.finish(key) else {
                    return;
                };
                let result = Err(IoError::new(op, libc::ECANCELED));
                return self.push_event(Event::Written {
                    file: FileHandle(write.file),
                    tag: write.tag,
                    result,
                });
            }
            if unfinished {
                // Short write (its linked sync was cancelled), or the sync
                // alone was cancelled: resubmit what remains.
                return self.issue(key);
            }
        }
        let total = write.total;
        let Some(OpBody::Write(write)) = self.finish(key) else {
            return;
        };
        let result = failure.map_or(Ok(total), Err);
        self.push_event(Event::Written {
            file: FileHandle(write.file),
            tag: write.tag,
            result,
        });
    }

    fn on_read(&mut self, key: Key, result: i32) {
        let shutting_down = self.shutting_down;
        let Some(OpBody::Read(read)) = self.ops.get_mut(key).map(|entry| &mut entry.body) else {
            return;
        };
        let failure = if result < 0 {
            Some(IoError::new(OpKind::Read, -result))
        } else {
            None
        };
        if failure.is_none() && result > 0 {
            read.advance(result as u64);
            // A short read (not the end of the file: that reads 0) goes
            // on from where it stopped, unless the core is stopping.
            if !read.bytes_done() && !shutting_down {
                return self.issue(key);
            }
        }
        let Some(OpBody::Read(read)) = self.finish(key) else {
            return;
        };
        let read = *read;
        let result = failure.map_or(Ok(read.read), Err);
        self.push_event(Event::Read {
            file: FileHandle(read.file),
            tag: read.tag,
            chunk: read.chunk,
            result,
        });
    }

    fn on_timer(&mut self, key: Key, result: i32) {
        let Some(OpBody::Timer {
            tag,
            purpose,
            cancelled,
            ..
        }) = self.finish(key)
        else {
            return;
        };
        match purpose {
            TimerPurpose::Handler => {
                if !cancelled && result == -libc::ETIME {
                    self.push_event(Event::TimerFired { tag });
                }
            }
            TimerPurpose::RearmAccept(listener) => {
                if !self.shutting_down {
                    self.arm_accept(listener);
                }
            }
        }
    }

    fn on_file_op(&mut self, key: Key, result: i32) {
        let Some(body) = self.finish(key) else { return };
        let outcome = |op: OpKind| {
            if result < 0 {
                Err(IoError::new(op, -result))
            } else {
                Ok(())
            }
        };
        let event = match body {
            OpBody::Open { tag, .. } => {
                let result = if result < 0 {
                    Err(IoError::new(OpKind::Open, -result))
                } else {
                    // SAFETY: a successful open completion's result is a new
                    // descriptor the kernel created for us.
                    let fd = unsafe { super::adopt_fd(result) };
                    self.files
                        .insert(fd)
                        .map_err(|_| IoError::new(OpKind::Open, libc::EMFILE))
                };
                Event::Opened { tag, result }
            }
            OpBody::Sync { file, tag, .. } => Event::Synced {
                file: FileHandle(file),
                tag,
                result: outcome(OpKind::Sync),
            },
            OpBody::Rename { tag, .. } => Event::Renamed {
                tag,
                result: outcome(OpKind::Rename),
            },
            OpBody::MkDir { tag, .. } => Event::DirCreated {
                tag,
                result: outcome(OpKind::MkDir),
            },
            OpBody::Unlink { tag, .. } => Event::Unlinked {
                tag,
                result: outcome(OpKind::Unlink),
            },
            OpBody::Close { tag, .. } => Event::FileClosed {
                tag,
                result: outcome(OpKind::Close),
            },
            _ => return,
        };
        self.push_event(event);
    }
}
