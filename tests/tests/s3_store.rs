//! The S3 store against a real S3 server (Garage), as a user's S3, MinIO or
//! R2 would be used: the `ObjectStore` conformance suite, credentials from
//! an AWS credentials file, multipart uploads, and prefixes that keep
//! archives apart.

use bytes::Bytes;
use tidemark_agent::store::{conformance, ObjectStore, S3Settings, S3Store};
use tidemark_tests::Garage;

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_store_conforms_against_garage() {
    let garage = Garage::start().unwrap();
    // The standard chain, from a credentials file; no instance metadata lookups.
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            garage.access_key_id(),
            garage.secret_access_key()
        ),
    )
    .unwrap();
    // This binary's only test: nothing else reads the environment concurrently.
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    std::env::set_var("AWS_CONFIG_FILE", dir.path().join("no-config"));
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
        std::env::remove_var(var);
    }
    let settings = |prefix: &str| S3Settings {
        bucket: garage.bucket().to_owned(),
        prefix: prefix.to_owned(),
        endpoint: Some(garage.endpoint()),
        region: Some(Garage::REGION.to_owned()),
        path_style: true,
    };
    let store = S3Store::connect(settings("archives/synapse")).await.unwrap();
    assert_eq!(store.describe(), format!("s3://{}/archives/synapse", garage.bucket()));
    conformance::run_all(&store).await;

    // Another prefix is another archive.
    let other = S3Store::connect(settings("archives/mastodon")).await.unwrap();
    assert!(other.list("").await.unwrap().is_empty());
    other.put("archive.json", Bytes::from_static(b"{}")).await.unwrap();
    assert!(!store.list("").await.unwrap().iter().any(|o| o.key == "archive.json"));

    // A file above the part size goes up in parts and comes back whole.
    let big = dir.path().join("big");
    let body: Vec<u8> = (0..40u32 * 1024 * 1024 + 123).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(&big, &body).unwrap();
    store.put_file("bases/0000000001000000/data/0000016384-000000.copy.zst", &big).await.unwrap();
    let back = store.get("bases/0000000001000000/data/0000016384-000000.copy.zst").await.unwrap();
    assert!(back.len() == body.len() && back == body, "multipart upload round trip");

    // Wrong credentials are an error naming the operation, not a panic.
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = {}\naws_secret_access_key = wrong\n", garage.access_key_id()),
    )
    .unwrap();
    let wrong = S3Store::connect(settings("archives/synapse")).await.unwrap();
    let err = wrong.put("x", Bytes::from_static(b"x")).await.unwrap_err();
    assert!(err.to_string().starts_with("S3 could not put x"), "{err}");
}
