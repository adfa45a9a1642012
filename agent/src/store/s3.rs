//! `S3Store`: an archive under `s3://bucket/prefix` on any S3-compatible
//! service (AWS S3, Garage, MinIO, R2), with aws-sdk-s3. Credentials come
//! from the standard AWS chain (environment, `~/.aws/credentials`, profiles,
//! instance roles). Requests retry with exponential backoff and jitter on
//! throttling, 5xx and timeouts; every PUT carries a CRC32C checksum the
//! service verifies; large files go up in parts, and a failed multipart
//! upload is aborted.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{check_range, validate_key, validate_prefix, ObjectMeta, ObjectStore, StoreError};

/// Files larger than this are uploaded in parts of this size.
const PART_SIZE: u64 = 16 << 20;

/// Where and how to reach the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// An endpoint URL for services other than AWS (`http://127.0.0.1:3900`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most
    /// self-hosted services need.
    pub path_style: bool,
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    settings: S3Settings,
}

fn s3_error<E: std::error::Error + Send + Sync + 'static>(op: &'static str, key: &str) -> impl FnOnce(E) -> StoreError {
    let key = key.to_owned();
    move |e| {
        let message = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
        StoreError::Remote { op, key, message, source: Box::new(e) }
    }
}

impl S3Store {
    /// Builds a client from the standard AWS configuration chain, with the
    /// settings' endpoint, region and addressing on top.
    pub async fn connect(settings: S3Settings) -> Result<Self, StoreError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(8).with_initial_backoff(Duration::from_millis(200)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        if shared.region().is_none() && settings.region.is_none() {
            config = config.region(Region::new("us-east-1"));
        }
        Ok(S3Store { client: aws_sdk_s3::Client::from_conf(config.build()), settings })
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(self.join(key))
    }

    fn join(&self, key: &str) -> String {
        if self.settings.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.settings.prefix)
        }
    }

    async fn put_parts(&self, key: &str, full: &str, path: &Path) -> Result<(), StoreError> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(s3_error("start a multipart upload of", key))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(key, full, path, &upload_id).await;
        if result.is_err() {
            // Leave no orphaned parts behind to be billed.
            let abort =
                self.client.abort_multipart_upload().bucket(&self.settings.bucket).key(full).upload_id(&upload_id);
            if let Err(e) = abort.send().await {
                tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not abort a failed multipart upload");
            }
        }
        result
    }

    async fn upload_parts(&self, key: &str, full: &str, path: &Path, upload_id: &str) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { op: "read", location: path.display().to_string(), source };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut parts = Vec::new();
        for number in 1.. {
            let mut buf = Vec::with_capacity(PART_SIZE as usize);
            (&mut file).take(PART_SIZE).read_to_end(&mut buf).await.map_err(io)?;
            if buf.is_empty() && number > 1 {
                break;
            }
            let done = (buf.len() as u64) < PART_SIZE;
            let part = self
                .client
                .upload_part()
                .bucket(&self.settings.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(s3_error("upload a part of", key))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .set_checksum_crc32_c(part.checksum_crc32_c().map(str::to_owned))
                    .build(),
            );
            if done {
                break;
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(s3_error("complete the multipart upload of", key))?;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(s3_error("put", key))?;
        Ok(())
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| StoreError::Io { op: "stat", location: path.display().to_string(), source })?
            .len();
        if size > PART_SIZE {
            return self.put_parts(key, &full, path).await;
        }
        // At most one part in memory. A streamed body would be sent with
        // aws-chunked trailing checksums, which not every S3 service accepts.
        self.put(key, super::read_local(path).await?).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let full = self.full_key(key)?;
        let object = match self.client.get_object().bucket(&self.settings.bucket).key(&full).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound { key: key.to_owned() })
            }
            Err(e) => return Err(s3_error("get", key)(e)),
        };
        Ok(object.body.collect().await.map_err(s3_error("read", key))?.into_bytes())
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let full = self.full_key(key)?;
        // S3 has no empty range: learn the size to check it.
        if range.start >= range.end {
            let head = match self.client.head_object().bucket(&self.settings.bucket).key(&full).send().await {
                Ok(h) => h,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                    return Err(StoreError::NotFound { key: key.to_owned() })
                }
                Err(e) => return Err(s3_error("stat", key)(e)),
            };
            check_range(key, &range, head.content_length().unwrap_or(0).max(0) as u64)?;
            return Ok(Bytes::new());
        }
        let request = self.client.get_object().bucket(&self.settings.bucket).key(&full).range(format!(
            "bytes={}-{}",
            range.start,
            range.end - 1
        ));
        let object = match request.send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound { key: key.to_owned() })
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Err(StoreError::InvalidRange {
                    key: key.to_owned(),
                    start: range.start,
                    end: range.end,
                    size: 0,
                })
            }
            Err(e) => return Err(s3_error("get", key)(e)),
        };
        // "bytes 8-9/10": the total tells whether the range fitted.
        let total = object.content_range().and_then(|r| r.rsplit('/').next()).and_then(|t| t.parse::<u64>().ok());
        if let Some(size) = total {
            check_range(key, &range, size)?;
        }
        Ok(object.body.collect().await.map_err(s3_error("read", key))?.into_bytes())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let full_prefix = self.join(prefix);
        let strip = if self.settings.prefix.is_empty() { 0 } else { self.settings.prefix.len() + 1 };
        let mut out = Vec::new();
        let mut pages =
            self.client.list_objects_v2().bucket(&self.settings.bucket).prefix(&full_prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_error("list", prefix))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.get(strip..)) {
                    out.push(ObjectMeta { key: key.to_owned(), size: object.size().unwrap_or(0).max(0) as u64 });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(&full)
            .send()
            .await
            .map_err(s3_error("delete", key))?;
        Ok(())
    }

    fn describe(&self) -> String {
        match self.settings.prefix.as_str() {
            "" => format!("s3://{}", self.settings.bucket),
            prefix => format!("s3://{}/{prefix}", self.settings.bucket),
        }
    }
}
