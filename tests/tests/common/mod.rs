//! Helpers shared by the end-to-end tests that need the agent's library
//! (the harness crate itself does not depend on it).

use tidemark_agent::store::{ObjectStore, S3Settings, S3Store};
use tidemark_tests::reference::{segment_transactions, Transaction};
use tidemark_tests::Garage;
use wal_format::{SegmentKey, SEGMENTS_PREFIX};

/// The S3 store of an archive under `prefix` in the test Garage's bucket.
pub async fn garage_store(garage: &Garage, prefix: &str) -> S3Store {
    S3Store::connect(S3Settings {
        bucket: garage.bucket().to_owned(),
        prefix: prefix.to_owned(),
        endpoint: Some(garage.endpoint()),
        region: Some(Garage::REGION.to_owned()),
        path_style: true,
    })
    .await
    .expect("the S3 store connects")
}

/// Every transaction of an S3 archive, in order, checking the chain.
pub async fn s3_transactions(store: &S3Store) -> Vec<Transaction> {
    let mut segments = Vec::new();
    for object in store.list(SEGMENTS_PREFIX).await.unwrap() {
        let key = SegmentKey::parse(&object.key).unwrap();
        segments.push((key, store.get(&object.key).await.unwrap().to_vec()));
    }
    segment_transactions(segments)
}
