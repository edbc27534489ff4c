//! The S3 requests the object store needs, blocking: a segment's multipart
//! upload (each part with its Content-MD5, which the store checks before it
//! takes the part), the object's HEAD, a ranged GET. Requests are signed by
//! `rusty-s3` (presigned SigV4 URLs, the Content-MD5 header among the signed
//! ones) and sent by `ureq`; nothing here is async.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::{Digest, Md5};
use rusty_s3::actions::CreateMultipartUpload;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::ObjectsError;
use crate::config::ObjectsConfig;

/// How long a presigned request stays valid (it is sent at once).
const SIGNATURE_VALID: Duration = Duration::from_secs(900);

/// The most bytes of an error answer kept for the message.
const ERROR_BODY_BYTES_MAX: u64 = 4096;

/// The most bytes of an XML answer read (multipart create and complete).
const XML_BODY_BYTES_MAX: u64 = 1 << 20;

/// S3's most parts per upload.
const PARTS_MAX: u64 = 10_000;

/// A bucket of an S3-compatible store, with the credentials to use it.
#[derive(Debug)]
pub(crate) struct Client {
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
    part_size_bytes: u64,
    /// Bytes per second the uploads may send (`None`: no limit).
    rate_bytes_per_s: Option<u64>,
}

/// What a HEAD says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectHead {
    pub(crate) size_bytes: u64,
    pub(crate) etag: String,
}

impl Client {
    /// A client for `[objects]` (which has an endpoint), the secret read
    /// from its file.
    pub(crate) fn new(config: &ObjectsConfig) -> Result<Client, ObjectsError> {
        let missing = |option: &str| {
            ObjectsError::Config(format!(
                "objects.{option} is required with objects.endpoint"
            ))
        };
        let endpoint = config
            .endpoint
            .as_ref()
            .ok_or_else(|| missing("endpoint"))?;
        let bucket_name = config.bucket.as_ref().ok_or_else(|| missing("bucket"))?;
        let key_id = config.key_id.as_ref().ok_or_else(|| missing("key_id"))?;
        let secret_file = config
            .secret_file
            .as_ref()
            .ok_or_else(|| missing("secret_file"))?;
        let secret = read_secret(secret_file)?;
        let bucket = Bucket::new(
            endpoint.url().clone(),
            UrlStyle::Path,
            bucket_name.as_str().to_owned(),
            config.region.as_str().to_owned(),
        )
        .map_err(|error| {
            ObjectsError::Config(format!(
                "objects.endpoint {endpoint} with bucket {bucket_name}: {error}"
            ))
        })?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.request_timeout_ms))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Client {
            bucket,
            credentials: Credentials::new(key_id.as_str().to_owned(), secret),
            agent,
            part_size_bytes: u64::from(config.part_size_mib) << 20,
            rate_bytes_per_s: (config.upload_rate_mib > 0)
                .then(|| u64::from(config.upload_rate_mib) << 20),
        })
    }

    /// Uploads `size_bytes` of the file at `path` as `key` in parts, each
    /// checked by the store against its Content-MD5, then checks the
    /// store's answers: each part's ETag is its MD5, the object's ETag is
    /// the multipart ETag of those MD5s, and a HEAD gives that ETag and
    /// the size. Returns the object's ETag. An upload that fails is aborted
    /// (the store drops its parts).
    pub(crate) fn upload_file(
        &self,
        key: &str,
        path: &Path,
        size_bytes: u64,
    ) -> Result<String, ObjectsError> {
        let file = File::open(path).map_err(|source| ObjectsError::Io {
            operation: "open",
            path: path.to_owned(),
            source,
        })?;
        let actual = file
            .metadata()
            .map_err(|source| ObjectsError::Io {
                operation: "stat",
                path: path.to_owned(),
                source,
            })?
            .len();
        if actual != size_bytes {
            return Err(ObjectsError::Verify {
                key: key.to_owned(),
                detail: format!("the local file is {actual} bytes, {size_bytes} expected"),
            });
        }
        let part_size = self
            .part_size_bytes
            .max(size_bytes.div_ceil(PARTS_MAX))
            .max(1);
        let create = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key);
        let url = create.sign(SIGNATURE_VALID);
        let mut response = self
            .agent
            .post(url.as_str())
            .send_empty()
            .map_err(self.http("create the multipart upload of", key))?;
        let body = self.body_of(&mut response, "create the multipart upload of", key)?;
        let created =
            CreateMultipartUpload::parse_response(&body).map_err(|error| ObjectsError::Answer {
                operation: "create the multipart upload of",
                key: key.to_owned(),
                detail: format!("{error}: {}", truncated(&body)),
            })?;
        let upload_id = created.upload_id().to_owned();
        match self.upload_parts(key, &upload_id, &file, path, size_bytes, part_size) {
            Ok(etag) => Ok(etag),
            Err(error) => {
                let abort =
                    self.bucket
                        .abort_multipart_upload(Some(&self.credentials), key, &upload_id);
                // Best effort: a store that failed the upload may fail this
                // too, and then keeps the parts until its own clean-up.
                let _ = self
                    .agent
                    .delete(abort.sign(SIGNATURE_VALID).as_str())
                    .call();
                Err(error)
            }
        }
    }

    fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &File,
        path: &Path,
        size_bytes: u64,
        part_size: u64,
    ) -> Result<String, ObjectsError> {
        let mut etags = Vec::new();
        let mut digests = Md5::new();
        let mut buffer = Vec::new();
        let mut offset = 0u64;
        let mut part_number = 0u16;
        let started = Instant::now();
        // An empty file is one empty part.
        while offset < size_bytes || part_number == 0 {
            part_number += 1;
            let length = part_size.min(size_bytes - offset);
            buffer.resize(usize::try_from(length).unwrap_or(usize::MAX), 0);
            file.read_exact_at(&mut buffer, offset)
                .map_err(|source| ObjectsError::Io {
                    operation: "read",
                    path: path.to_owned(),
                    source,
                })?;
            let digest = Md5::digest(&buffer);
            digests.update(digest);
            let content_md5 = base64::engine::general_purpose::STANDARD.encode(digest);
            let mut action =
                self.bucket
                    .upload_part(Some(&self.credentials), key, part_number, upload_id);
            action
                .headers_mut()
                .insert("content-md5", content_md5.clone());
            let url = action.sign(SIGNATURE_VALID);
            let mut response = self
                .agent
                .put(url.as_str())
                .header("content-md5", &content_md5)
                .send(&buffer[..])
                .map_err(self.http("upload a part of", key))?;
            self.body_of(&mut response, "upload a part of", key)?;
            let etag = etag_of(&response).unwrap_or_default();
            let expected = hex(&digest);
            if etag != expected {
                return Err(ObjectsError::Verify {
                    key: key.to_owned(),
                    detail: format!(
                        "part {part_number}: the store's ETag {etag:?} is not its MD5 {expected}"
                    ),
                });
            }
            etags.push(etag);
            offset += length;
            self.pace(offset, started);
        }
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNATURE_VALID);
        let mut response = self
            .agent
            .post(url.as_str())
            .send(complete.body())
            .map_err(self.http("complete the upload of", key))?;
        let body = self.body_of(&mut response, "complete the upload of", key)?;
        // S3 may answer 200 with an error in the body.
        if body.contains("<Error>") {
            return Err(ObjectsError::Answer {
                operation: "complete the upload of",
                key: key.to_owned(),
                detail: truncated(&body),
            });
        }
        let expected = format!("{}-{}", hex(&digests.finalize()), etags.len());
        let head = self.head(key)?.ok_or_else(|| ObjectsError::Verify {
            key: key.to_owned(),
            detail: "the object is missing right after its upload".to_owned(),
        })?;
        if head.size_bytes != size_bytes || head.etag != expected {
            return Err(ObjectsError::Verify {
                key: key.to_owned(),
                detail: format!(
                    "the store holds {} bytes with ETag {:?}; uploaded {size_bytes} bytes, ETag {expected:?}",
                    head.size_bytes, head.etag
                ),
            });
        }
        Ok(head.etag)
    }

    /// Sleeps as long as `sent` bytes since `started` are ahead of the rate.
    fn pace(&self, sent: u64, started: Instant) {
        let Some(rate) = self.rate_bytes_per_s else {
            return;
        };
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }

    /// The object's size and ETag; `None` when there is no such object.
    pub(crate) fn head(&self, key: &str) -> Result<Option<ObjectHead>, ObjectsError> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALID);
        let mut response = self
            .agent
            .head(url.as_str())
            .call()
            .map_err(self.http("HEAD", key))?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        self.body_of(&mut response, "HEAD", key)?;
        let size_bytes = response
            .headers()
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| ObjectsError::Answer {
                operation: "HEAD",
                key: key.to_owned(),
                detail: "no Content-Length".to_owned(),
            })?;
        Ok(Some(ObjectHead {
            size_bytes,
            etag: etag_of(&response).unwrap_or_default(),
        }))
    }

    /// `length` bytes of the object from `offset` (one ranged GET); fewer
    /// is an error.
    pub(crate) fn get_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ObjectsError> {
        if length == 0 {
            return Ok(Vec::new());
        }
        let last = offset
            .checked_add(length - 1)
            .ok_or_else(|| ObjectsError::Verify {
                key: key.to_owned(),
                detail: format!("a range of {length} bytes at {offset} ends past 2^64"),
            })?;
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNATURE_VALID);
        let mut response = self
            .agent
            .get(url.as_str())
            .header("range", &format!("bytes={offset}-{last}"))
            .call()
            .map_err(self.http("GET a range of", key))?;
        let status = response.status().as_u16();
        if status != 206 && status != 200 {
            self.body_of(&mut response, "GET a range of", key)?;
        }
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        response
            .body_mut()
            .as_reader()
            .take(length.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| ObjectsError::Http {
                operation: "GET a range of",
                key: key.to_owned(),
                source: Box::new(ureq::Error::Io(source)),
            })?;
        // A store that ignored the range sends the whole object: refused,
        // never taken for the range.
        if status != 206 || bytes.len() as u64 != length {
            return Err(ObjectsError::Verify {
                key: key.to_owned(),
                detail: format!(
                    "asked {length} bytes at {offset}, the store answered {status} with {}{}",
                    bytes
                        .len()
                        .min(usize::try_from(length).unwrap_or(usize::MAX)),
                    if bytes.len() as u64 > length {
                        " or more"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(bytes)
    }

    fn http<'k>(
        &self,
        operation: &'static str,
        key: &'k str,
    ) -> impl FnOnce(ureq::Error) -> ObjectsError + 'k {
        move |source| ObjectsError::Http {
            operation,
            key: key.to_owned(),
            source: Box::new(source),
        }
    }

    /// The body of a successful answer (bounded), or the error a failed
    /// one is.
    fn body_of(
        &self,
        response: &mut ureq::http::Response<ureq::Body>,
        operation: &'static str,
        key: &str,
    ) -> Result<String, ObjectsError> {
        let status = response.status().as_u16();
        let limit = if (200..300).contains(&status) {
            XML_BODY_BYTES_MAX
        } else {
            ERROR_BODY_BYTES_MAX
        };
        let mut body = String::new();
        // A HEAD has no body; a body that is not text is not ours to show.
        let _ = response
            .body_mut()
            .as_reader()
            .take(limit)
            .read_to_string(&mut body);
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ObjectsError::Status {
                operation,
                key: key.to_owned(),
                status,
                body: truncated(&body),
            })
        }
    }
}

/// The secret access key: the first line of its file.
fn read_secret(path: &Path) -> Result<String, ObjectsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ObjectsError::Io {
        operation: "read the secret key from",
        path: path.to_owned(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(ObjectsError::Config(format!(
            "objects.secret_file {} holds no secret",
            path.display()
        )));
    }
    Ok(secret)
}

fn etag_of(response: &ureq::http::Response<ureq::Body>) -> Option<String> {
    response
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim_matches('"').to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn truncated(body: &str) -> String {
    body.chars().take(300).collect()
}
