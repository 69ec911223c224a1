// Package s3 is the remote.Backend of s3://BUCKET/KEY URLs: images in AWS
// S3 or an S3-compatible store (MinIO, Ceph RGW, SeaweedFS), read by byte
// ranges through the AWS SDK (cloneio/objstore's client: credentials,
// region and endpoint from the standard AWS environment and files).
//
// Vocabulary: an opened object is one HeadObject (size, ETag,
// Last-Modified: its remote.Identity); each ReadRange is one ranged
// GetObject with If-Match on that ETag, its answer's ETag and
// Content-Range checked too. The backend does one request per call and
// reports what happened: the SDK's own retries are off, remote.File
// retries with its backoff, and a stalled request is cut after
// Options.StallTimeout so File can try again.
package s3
