//! The operating-system calls of kouiki-mpi that its safe dependencies (`rustix`, `std`) do not
//! offer: a thread's I/O scheduling class (`ioprio_set(2)`, `ioprio_get(2)`).
//!
//! The store's background folders write large random-keyed transactions to the same disk as
//! the audit log, whose every append waits for a `fdatasync`; a sync queued behind a fold's
//! megabytes waits for them. In the idle class, the block layer's schedulers that honour I/O
//! classes (`mq-deadline`, `bfq`: the usual ones for SATA and virtio disks) send a folder's
//! writes only when no other thread's wait (measured in docs/benchmarks.md). Elsewhere
//! (`none`, NVMe's default, or not Linux) the class has no effect, and nothing else changes.

/// A thread's I/O scheduling class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// None set: the class follows the thread's CPU scheduling (best effort for normal threads).
    Unset,
    /// Real time.
    RealTime,
    /// Best effort.
    BestEffort,
    /// Idle: served only when no other I/O waits (mq-deadline bounds the wait by its aging,
    /// 10 s by default).
    Idle,
}

#[cfg(target_os = "linux")]
mod linux {
    /// `IOPRIO_WHO_PROCESS` (`linux/ioprio.h`): `who` is a thread ID (0: the calling thread).
    const WHO_PROCESS: libc::c_long = 1;
    /// The class sits above the 13 bits of class data (`IOPRIO_CLASS_SHIFT`).
    const CLASS_SHIFT: u32 = 13;
    /// `IOPRIO_CLASS_IDLE`.
    const CLASS_IDLE: libc::c_long = 3;

    pub(super) fn set_idle() -> std::io::Result<()> {
        // SAFETY: `ioprio_set` takes three integers and no pointers; on failure it returns -1
        // and sets errno, read at once below.
        #[allow(unsafe_code)]
        let done = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                WHO_PROCESS,
                0,
                CLASS_IDLE << CLASS_SHIFT,
            )
        };
        if done == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn class_of(thread: i32) -> std::io::Result<super::IoClass> {
        // SAFETY: as above: two integers in, the priority (or -1 and errno) out.
        #[allow(unsafe_code)]
        let priority = unsafe {
            libc::syscall(
                libc::SYS_ioprio_get,
                WHO_PROCESS,
                libc::c_long::from(thread),
            )
        };
        if priority == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(match priority >> CLASS_SHIFT {
            1 => super::IoClass::RealTime,
            2 => super::IoClass::BestEffort,
            3 => super::IoClass::Idle,
            _ => super::IoClass::Unset,
        })
    }
}

/// Puts the calling thread's I/O in the idle class. An error means the kernel refused (it does
/// not for a thread lowering its own class); off Linux it does nothing.
pub fn idle_io_for_this_thread() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    return linux::set_idle();
    #[cfg(not(target_os = "linux"))]
    Ok(())
}

/// The I/O class of `thread`, a thread ID of this process (0: the calling thread). Off Linux,
/// always [`IoClass::Unset`].
pub fn io_class_of(thread: i32) -> std::io::Result<IoClass> {
    #[cfg(target_os = "linux")]
    return linux::class_of(thread);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = thread;
        Ok(IoClass::Unset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_puts_its_own_io_in_the_idle_class_and_no_other_threads() {
        let before = io_class_of(0).unwrap();
        assert_ne!(before, IoClass::Idle);
        let (class, other) = std::thread::spawn(move || {
            idle_io_for_this_thread().unwrap();
            (io_class_of(0).unwrap(), before)
        })
        .join()
        .unwrap();
        assert_eq!(class, IoClass::Idle);
        // The calling thread (the test's) is as it was.
        assert_eq!(io_class_of(0).unwrap(), other);
    }
}
