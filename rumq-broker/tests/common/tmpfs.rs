//! A tmpfs of a given size for a data directory: a full disk, for real. Mounting
//! needs root (CAP_SYS_ADMIN), as CI has; where it cannot be set up the test fails,
//! naming what it could not do: a test that cannot run must not pass.

use std::path::Path;
use std::process::Command;

/// Small segments (a disk fills, retention removes, in megabytes), packets up
/// to 64 KiB, no fsync, and `retention` (the `[storage.retention]` keys).
pub fn small_segments(retention: &str) -> String {
    format!(
        "[limits]\nmax_packet_size = 65536\n[storage]\nsegment_bytes_max = 1048576\n\
         index_bytes_max = 65536\nrecord_bytes_max = 65536\nfsync = \"never\"\n\
         [storage.retention]\n{retention}"
    )
}

/// Storage for a data directory on a small tmpfs: small segments, no retention
/// limit.
pub fn small_disk() -> String {
    small_segments("bytes_max = 0\nsegments_max = 0\nage_ms_max = 0\nhold_bytes_max = 0\n")
}

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop (a failing
/// test included: drop runs as the panic unwinds).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs of `mib` MiB, or panic saying what could not be set up.
    pub fn mount(mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("cannot create a directory to mount a tmpfs on");
        let size = format!("size={mib}m");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `mount` for the disk-full tmpfs: {e}"));
        assert!(
            out.status.success(),
            "cannot mount a {mib} MiB tmpfs on {} (`mount -t tmpfs -o {size} tmpfs DIR`: {}; {}); \
             this test needs root (CAP_SYS_ADMIN), as CI has",
            dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // From here on, drop unmounts, whatever fails next.
        let fs = Tmpfs { dir };
        assert!(
            fs.is_mounted(),
            "mount reported success, but {} is not a tmpfs mount point",
            fs.path().display()
        );
        fs
    }

    /// Whether the directory is a tmpfs mount point (per /proc/self/mountinfo).
    fn is_mounted(&self) -> bool {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("cannot read /proc/self/mountinfo to check the tmpfs");
        let dir = std::fs::canonicalize(self.dir.path()).expect("the tmpfs directory is gone");
        let dir = dir.to_string_lossy();
        info.lines().any(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let fs_type = line.split(" - ").nth(1).and_then(|s| s.split(' ').next());
            fields.get(4) == Some(&&*dir) && fs_type == Some("tmpfs")
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a broker still holding files there cannot keep the mount alive.
        let status = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            // Not a panic: drop may run while a failed test unwinds.
            eprintln!(
                "could not unmount the tmpfs on {}: {status:?}",
                self.dir.path().display()
            );
        }
    }
}
