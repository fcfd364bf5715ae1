//! A named background thread fed through a bounded queue: the plumbing shared by the
//! log's helpers that take work off the appending thread (`syncer`: the background
//! fsyncs; `page_cache`: page-cache advice). The owner hands jobs over without
//! waiting; stopping (or dropping) lets the thread finish the jobs queued and joins it.

use std::io;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

pub(crate) struct Worker<J> {
    jobs: Option<SyncSender<J>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static> Worker<J> {
    /// Start thread `name`, running `run` on each job, with room for `queue` jobs.
    pub(crate) fn start(
        name: &str,
        queue: usize,
        mut run: impl FnMut(J) + Send + 'static,
    ) -> io::Result<Worker<J>> {
        let (tx, rx) = sync_channel::<J>(queue);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    run(job);
                }
            })?;
        Ok(Worker {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queue `job`; it comes back when the queue is full or the thread is gone.
    pub(crate) fn try_send(&self, job: J) -> Result<(), J> {
        match &self.jobs {
            Some(jobs) => jobs.try_send(job).map_err(|e| match e {
                TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
            }),
            None => Err(job),
        }
    }
}

impl<J> Worker<J> {
    /// True once the thread has ended (stopped, or a job panicked).
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Let the thread finish the queued jobs, and join it.
    pub(crate) fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            // A panic in a job has nothing left to recover here.
            let _ = t.join();
        }
    }
}

impl<J> Drop for Worker<J> {
    fn drop(&mut self) {
        self.stop();
    }
}
