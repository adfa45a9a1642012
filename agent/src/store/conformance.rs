//! The conformance suite of `ObjectStore`: what every implementation must
//! do, as assertions. Each backend's tests call `run_all` on a fresh,
//! empty store; the suite panics with the rule that was broken.

use bytes::Bytes;

use super::{ObjectMeta, ObjectStore, StoreError};

pub async fn run_all(store: &dyn ObjectStore) {
    puts_are_read_back_exactly(store).await;
    a_put_replaces_the_object(store).await;
    missing_objects_are_not_found(store).await;
    listings_are_sorted_filtered_and_sized(store).await;
    ranges_read_part_of_an_object(store).await;
    deletes_remove_and_tolerate_missing_objects(store).await;
    invalid_keys_are_refused(store).await;
    large_files_are_put_whole(store).await;
    concurrent_puts_all_land(store).await;
}

fn keys(listing: &[ObjectMeta]) -> Vec<&str> {
    listing.iter().map(|o| o.key.as_str()).collect()
}

pub async fn puts_are_read_back_exactly(store: &dyn ObjectStore) {
    let body = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<_>>());
    store.put("c1/segments/a.seg", body.clone()).await.expect("put");
    assert_eq!(store.get("c1/segments/a.seg").await.expect("get"), body, "get returns what was put");
    store.put("c1/empty", Bytes::new()).await.expect("put an empty object");
    assert!(store.get("c1/empty").await.expect("get an empty object").is_empty());
}

pub async fn a_put_replaces_the_object(store: &dyn ObjectStore) {
    store.put("c2/k", Bytes::from_static(b"first, longer version")).await.unwrap();
    store.put("c2/k", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(&store.get("c2/k").await.unwrap()[..], b"second", "a put replaces the whole object");
}

pub async fn missing_objects_are_not_found(store: &dyn ObjectStore) {
    let err = store.get("c3/missing").await.expect_err("a missing object");
    assert!(err.is_not_found(), "a missing object is NotFound, not {err:?}");
    assert!(store.get_range("c3/missing", 0..1).await.expect_err("a missing object").is_not_found());
}

pub async fn listings_are_sorted_filtered_and_sized(store: &dyn ObjectStore) {
    for key in ["c4/segments/B", "c4/segments/A", "c4/bases/X/manifest.json", "c4/segmentsZ", "c4x/other"] {
        store.put(key, Bytes::from(key.as_bytes().to_vec())).await.unwrap();
    }
    let all = store.list("c4/").await.unwrap();
    assert_eq!(keys(&all), ["c4/bases/X/manifest.json", "c4/segments/A", "c4/segments/B", "c4/segmentsZ"]);
    assert_eq!(all[1].size, "c4/segments/A".len() as u64, "listings carry sizes");
    assert_eq!(keys(&store.list("c4/segments/").await.unwrap()), ["c4/segments/A", "c4/segments/B"]);
    assert_eq!(keys(&store.list("c4/segments").await.unwrap()), ["c4/segments/A", "c4/segments/B", "c4/segmentsZ"]);
    assert_eq!(keys(&store.list("c4/segments/A").await.unwrap()), ["c4/segments/A"]);
    assert!(store.list("c4/nothing/").await.unwrap().is_empty(), "an empty listing is not an error");
}

pub async fn ranges_read_part_of_an_object(store: &dyn ObjectStore) {
    store.put("c5/r", Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(&store.get_range("c5/r", 2..5).await.unwrap()[..], b"234");
    assert_eq!(&store.get_range("c5/r", 0..10).await.unwrap()[..], b"0123456789");
    assert!(store.get_range("c5/r", 5..5).await.unwrap().is_empty());
    let err = store.get_range("c5/r", 8..12).await.expect_err("a range past the end");
    assert!(matches!(err, StoreError::InvalidRange { size: 10, .. }), "{err:?}");
}

pub async fn deletes_remove_and_tolerate_missing_objects(store: &dyn ObjectStore) {
    store.put("c6/d", Bytes::from_static(b"x")).await.unwrap();
    store.delete("c6/d").await.expect("delete");
    assert!(store.get("c6/d").await.expect_err("deleted").is_not_found());
    assert!(store.list("c6/").await.unwrap().is_empty());
    store.delete("c6/d").await.expect("deleting a missing object succeeds");
}

pub async fn invalid_keys_are_refused(store: &dyn ObjectStore) {
    for key in ["", "/abs", "a//b", "a/../b", "./a", "a/", "a b", "a/.tmp-x", "é"] {
        let err = store.put(key, Bytes::from_static(b"x")).await.expect_err(key);
        assert!(matches!(err, StoreError::InvalidKey { .. }), "{key:?} gave {err:?}");
    }
}

pub async fn large_files_are_put_whole(store: &dyn ObjectStore) {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tidemark-conformance-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big");
    let body: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    store.put_file("c7/big", &path).await.expect("put_file");
    let _ = std::fs::remove_dir_all(&dir);
    let got = store.get("c7/big").await.unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "put_file stores the file's exact bytes");
}

pub async fn concurrent_puts_all_land(store: &dyn ObjectStore) {
    let keys: Vec<String> = (0..16).map(|i| format!("c8/{i:02}")).collect();
    let puts = keys.iter().enumerate().map(|(i, key)| store.put(key, Bytes::from(vec![i as u8; 1000])));
    for result in futures::future::join_all(puts).await {
        result.expect("concurrent put");
    }
    assert_eq!(store.list("c8/").await.unwrap().len(), 16);
}
