use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, EntryPayload, LogId as RaftLogId};

use super::*;
use crate::command::MetaCommand;

fn id(term: u64, index: u64) -> EntryId {
    RaftLogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry {
    let command = MetaCommand::Release {
        client_id: format!("c{index}"),
        node: mesh::NodeId(1),
    };
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Normal(command),
    }
}

async fn append(store: &mut LogStore, indexes: std::ops::RangeInclusive<u64>, term: u64) {
    store
        .blocking_append(indexes.map(|i| entry(term, i)))
        .await
        .unwrap();
}

async fn ids(store: &mut LogStore) -> Vec<EntryId> {
    store
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id)
        .collect()
}

async fn image(
    store: &mut LogStore,
) -> (
    LogState<TypeConfig>,
    Vec<EntryId>,
    Option<Vote<u64>>,
    Option<EntryId>,
) {
    (
        store.get_log_state().await.unwrap(),
        ids(store).await,
        store.read_vote().await.unwrap(),
        store.read_committed().await.unwrap(),
    )
}

#[tokio::test]
async fn a_fresh_store_is_empty_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    assert!(store.is_fresh().unwrap());
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_log_id, state.last_purged_log_id), (None, None));
    store.save_vote(&Vote::new(1, 2)).await.unwrap();
    assert!(!store.is_fresh().unwrap());
    assert!(!LogStore::open(dir.path()).unwrap().is_fresh().unwrap());
}

#[tokio::test]
async fn reopening_after_append_vote_and_commit_gives_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, 1..=3, 1).await;
    append(&mut store, 4..=5, 2).await;
    store.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
    store.save_committed(Some(id(2, 4))).await.unwrap();
    let before = image(&mut store).await;
    drop(store);
    let mut reopened = LogStore::open(dir.path()).unwrap();
    assert_eq!(image(&mut reopened).await, before);
    assert_eq!(before.1.len(), 5);
    assert_eq!(before.2, Some(Vote::new_committed(2, 3)));
    // Appending after a reopen continues the file where it ended.
    append(&mut reopened, 6..=6, 2).await;
    assert_eq!(ids(&mut LogStore::open(dir.path()).unwrap()).await.len(), 6);
}

#[tokio::test]
async fn a_truncated_suffix_stays_gone_and_new_entries_take_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, 1..=5, 1).await;
    store.truncate(id(1, 3)).await.unwrap();
    assert_eq!(ids(&mut store).await, [id(1, 1), id(1, 2)]);
    append(&mut store, 3..=4, 2).await;
    let before = image(&mut store).await;
    drop(store);
    let mut reopened = LogStore::open(dir.path()).unwrap();
    assert_eq!(image(&mut reopened).await, before);
    assert_eq!(before.1, [id(1, 1), id(1, 2), id(2, 3), id(2, 4)]);
}

#[tokio::test]
async fn a_purged_prefix_stays_gone_and_the_log_state_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, 1..=5, 1).await;
    store.purge(id(1, 3)).await.unwrap();
    append(&mut store, 6..=6, 1).await;
    let before = image(&mut store).await;
    assert_eq!(before.0.last_purged_log_id, Some(id(1, 3)));
    assert_eq!(before.1, [id(1, 4), id(1, 5), id(1, 6)]);
    drop(store);
    let mut reopened = LogStore::open(dir.path()).unwrap();
    assert_eq!(image(&mut reopened).await, before);
    // Purging everything leaves the purged id as the last log id.
    reopened.purge(id(1, 6)).await.unwrap();
    drop(reopened);
    let state = LogStore::open(dir.path())
        .unwrap()
        .get_log_state()
        .await
        .unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(id(1, 6)), Some(id(1, 6)))
    );
}

#[tokio::test]
async fn a_purge_that_crashed_before_its_rewrite_skips_the_purged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, 1..=4, 1).await;
    drop(store);
    durable::write_json(&dir.path().join(PURGED_FILE), &id(1, 2)).unwrap();
    let mut reopened = LogStore::open(dir.path()).unwrap();
    assert_eq!(ids(&mut reopened).await, [id(1, 3), id(1, 4)]);
}

#[tokio::test]
async fn a_torn_last_record_is_dropped_at_open_and_the_file_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, 1..=3, 1).await;
    drop(store);
    let path = dir.path().join(LOG_FILE);
    let whole = fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(whole - 5)
        .unwrap();
    let mut reopened = LogStore::open(dir.path()).unwrap();
    assert_eq!(ids(&mut reopened).await, [id(1, 1), id(1, 2)]);
    append(&mut reopened, 3..=3, 2).await;
    drop(reopened);
    assert_eq!(
        ids(&mut LogStore::open(dir.path()).unwrap()).await,
        [id(1, 1), id(1, 2), id(2, 3)]
    );
}

#[tokio::test]
async fn a_bad_checksum_in_the_middle_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, 1..=3, 1).await;
    drop(store);
    let path = dir.path().join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[log_file::HEADER_BYTES + 2] ^= 0x20;
    fs::write(&path, bytes).unwrap();
    let err = LogStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("raft.log") && err.contains("byte 0"), "{err}");
}

#[tokio::test]
async fn an_append_that_would_leave_a_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, 1..=2, 1).await;
    let err = store.blocking_append([entry(1, 4)]).await.unwrap_err();
    assert!(err.to_string().contains("entry 4"), "{err}");
    assert_eq!(ids(&mut store).await.len(), 2);
}
