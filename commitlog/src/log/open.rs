//! Opening and closing a log's directory: claiming it (meta file, lock), opening its
//! segments with recovery, starting the helper threads; and the clean close whose
//! marker lets the next open skip the full scan.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::Log;
use crate::config::{Fsync, LogConfig};
use crate::error::{Error, Result};
use crate::page_cache::PageCache;
use crate::recovery::Policy;
use crate::segment::{self, FileKind, Segment, WriteScratch};
use crate::syncer::{SyncFile, Syncer};
use crate::tail::Tail;
use crate::timing::Timings;
use crate::Offset;

const META_FILE: &str = "log.meta";
const META_CONTENT: &[u8] = b"rumq-commitlog 1\n";
const LOCK_FILE: &str = "LOCK";
const CLEAN_FILE: &str = "clean-shutdown";

impl Log {
    /// Open the log in `dir`, creating it if the directory is missing or empty, and
    /// recovering whatever a crash left.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let Claimed { names, lock, clean } = claim_dir(&dir)?;
        let policy = Policy {
            index_interval_bytes: config.index_interval_bytes,
            record_bytes_max: config.record_bytes_max,
            verify_reads: config.verify_reads,
        };
        let mut segments = open_segments(&dir, &names, clean, policy, &config)?;
        if clean {
            let clean_path = dir.join(CLEAN_FILE);
            std::fs::remove_file(&clean_path).map_err(|e| Error::io("remove", &clean_path, e))?;
            sync_dir(&dir)?;
        }
        let head = segments.back().map_or(Offset(0), Segment::next);
        let roll_pending = seal_if_full(&mut segments, &config)?;
        tracing::debug!(dir = %dir.display(), segments = segments.len(), %head, clean, "opened log");
        let timings = Arc::new(Timings::default());
        let (syncer, page_cache) = start_threads(&dir, &config, head, &timings)?;
        Ok(Log {
            tail: Tail::new(head, config.tail_bytes_max),
            dir,
            policy,
            segments,
            roll_pending,
            head,
            write_buf: WriteScratch::default(),
            last_sync: Instant::now(),
            unsynced: false,
            syncer,
            page_cache,
            // What recovery kept is on disk (it syncs what it cuts), and nothing of
            // it is known to be cached.
            synced_to: head,
            sealing_through: head,
            dropped_to: head,
            poisoned: false,
            timings,
            _lock: lock,
            config,
        })
    }

    /// Close cleanly: sync, trim the active index, and leave the marker that lets the
    /// next open skip the full scan of the active segment.
    pub fn close(mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if let Some(mut syncer) = self.syncer.take() {
            syncer.stop();
            if let Some(e) = syncer.take_failure() {
                return Err(e);
            }
        }
        self.unsynced = true;
        self.sync()?;
        if let Some(seg) = self.segments.back_mut() {
            seg.seal(true)?;
        }
        write_durably(&self.dir, CLEAN_FILE, b"")?;
        Ok(())
    }
}

/// A directory this process now holds as a log.
struct Claimed {
    /// Its entries, sorted.
    names: Vec<String>,
    /// The locked `LOCK` file, held for as long as the log is open.
    lock: File,
    /// The last close was clean (its marker is there).
    clean: bool,
}

/// Create `dir` if needed, check that it is a log (or empty), lock it and mark it as
/// a log.
fn claim_dir(dir: &Path) -> Result<Claimed> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let names = list_dir(dir)?;
    check_is_log(dir, &names)?;
    let lock = lock_dir(dir)?;
    let meta_path = dir.join(META_FILE);
    if !meta_path.exists() {
        write_durably(dir, META_FILE, META_CONTENT)?;
    }
    let clean = dir.join(CLEAN_FILE).exists();
    Ok(Claimed { names, lock, clean })
}

/// Open the segments found in `dir`, oldest first, each recovered as needed.
fn open_segments(
    dir: &Path,
    names: &[String],
    clean: bool,
    policy: Policy,
    config: &LogConfig,
) -> Result<VecDeque<Segment>> {
    let bases = segment_bases(dir, names)?;
    let mut segments = VecDeque::with_capacity(bases.len());
    for (i, base) in bases.iter().enumerate() {
        let active = i + 1 == bases.len();
        // Sealed segments were trimmed when rolled and their fsync had finished
        // before the next roll (see `Log::roll`): their index is checked cheaply. The
        // active one, and the one sealed last (whose fsync may not have finished),
        // are scanned in full unless the log was closed cleanly.
        let seg_clean = clean || i + 2 < bases.len();
        let seg = Segment::open(
            dir,
            *base,
            active,
            seg_clean,
            policy,
            config.index_bytes_max,
            config.preallocation(),
        )?;
        if let Some(prev) = segments.back() {
            check_follows(dir, prev, &seg)?;
        }
        segments.push_back(seg);
    }
    Ok(segments)
}

/// `seg` must start where `prev` ends, or later (a hole a crash left, which readers
/// skip); never earlier.
fn check_follows(dir: &Path, prev: &Segment, seg: &Segment) -> Result<()> {
    let prev = prev.next();
    if prev < seg.base() {
        tracing::warn!(
            missing = ?(prev..seg.base()),
            "offsets lost in a crash (a sealed segment was cut short); readers skip them"
        );
    } else if prev > seg.base() {
        return Err(Error::NotALog {
            path: dir.join(segment::data_file_name(seg.base())),
            reason: format!("segment overlaps the one before it (which ends at {prev})"),
        });
    }
    Ok(())
}

/// True when the next append must start a new segment: there is none, or the last
/// one's index is full (then it is sealed here).
fn seal_if_full(segments: &mut VecDeque<Segment>, config: &LogConfig) -> Result<bool> {
    let roll_pending = segments.back().is_none_or(Segment::index_is_full);
    if roll_pending {
        // Its index is full: it will never be appended to again, so it is sealed
        // now (opened as the active one, it was extended to its preallocated
        // size, and nothing else would trim it).
        if let Some(seg) = segments.back_mut() {
            seg.seal(config.fsync != Fsync::Never)?;
        }
    }
    Ok(roll_pending)
}

/// The helper threads the configuration asks for: the background fsync of
/// `interval` (records below `head` are durable already) and drop-behind's.
fn start_threads(
    dir: &Path,
    config: &LogConfig,
    head: Offset,
    timings: &Arc<Timings>,
) -> Result<(Option<Syncer>, Option<PageCache>)> {
    let syncer = match config.fsync {
        Fsync::Interval => Some(
            Syncer::start("rumq-fsync", head, timings.clone())
                .map_err(|e| Error::io("start the fsync thread for", dir, e))?,
        ),
        Fsync::Always | Fsync::Never => None,
    };
    let page_cache = if config.drops_behind() {
        Some(
            PageCache::start("rumq-pagecache")
                .map_err(|e| Error::io("start the page-cache thread for", dir, e))?,
        )
    } else {
        None
    };
    Ok((syncer, page_cache))
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A directory is a log if it has our meta file with the right content, or is empty
/// (then it becomes one), or holds only what a crash while it became one left.
fn check_is_log(dir: &Path, names: &[String]) -> Result<()> {
    if names.iter().any(|n| n == META_FILE) {
        let path = dir.join(META_FILE);
        let content = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        if content != META_CONTENT {
            return Err(Error::NotALog {
                path: dir.to_path_buf(),
                reason: format!(
                    "{META_FILE} says {:?}, expected {:?}",
                    String::from_utf8_lossy(&content),
                    String::from_utf8_lossy(META_CONTENT)
                ),
            });
        }
        return Ok(());
    }
    // (Its lock, and the temporary meta file of a creation a crash cut short:
    // `claim_dir` finishes it.)
    let meta_tmp = format!("{META_FILE}.tmp");
    match names
        .iter()
        .find(|n| n.as_str() != LOCK_FILE && **n != meta_tmp)
    {
        None => Ok(()),
        Some(other) => Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("it has no {META_FILE} but holds other files (such as {other:?})"),
        }),
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// The base offsets of the segments present, sorted. Index files without a data file
/// are leftovers of an interrupted removal and are deleted.
fn segment_bases(dir: &Path, names: &[String]) -> Result<Vec<Offset>> {
    let mut data = Vec::new();
    let mut index = Vec::new();
    for name in names {
        match segment::parse_file_name(name) {
            Some((base, FileKind::Data)) => data.push(base),
            Some((base, FileKind::Index)) => index.push(base),
            None if name == META_FILE || name == LOCK_FILE || name == CLEAN_FILE => {}
            None => {
                tracing::warn!(file = %dir.join(name).display(), "ignoring unknown file in log directory")
            }
        }
    }
    data.sort();
    for base in index {
        if data.binary_search(&base).is_err() {
            let path = dir.join(segment::index_file_name(base));
            tracing::warn!(file = %path.display(), "removing index without a data file");
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(data)
}

/// Write a small file so that a crash leaves either no file or the whole content:
/// write to a temporary name, fsync, rename, fsync the directory.
fn write_durably(dir: &Path, name: &str, content: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(content)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    SyncFile::directory(dir)?.sync()
}
