// Package objstore reads images from and writes images to object stores
// and web servers: S3 (s3://bucket/key, through the AWS SDK, so AWS, MinIO,
// Ceph RGW, SeaweedFS and the other S3-compatible stores work) and, for
// uploads, HTTP servers that accept PUT (WebDAV: nginx with dav_methods).
//
// Vocabulary:
//   - URL: an upload or read location: s3://BUCKET/KEY, http://… or
//     https://…. IsURL tells one from a local path.
//   - S3: a client configured from the standard AWS environment and files
//     (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION,
//     AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, ~/.aws/config and
//     credentials). With an endpoint set, requests use path-style
//     addressing (http://host/bucket/key), which every S3-compatible
//     server accepts; without one, AWS's virtual-hosted style.
//   - Object: one S3 object opened for reading: its size and ETag, taken
//     once by HeadObject. Every ranged read sends If-Match with that ETag
//     and checks the ETag and Content-Range it gets back, so an object
//     replaced under a reader is an error (ErrChanged), never a mix of two
//     images' bytes. Object is an io.ReaderAt.
//   - Upload: an image being written to a URL. It is an io.Writer (capture
//     streams into it as it would into a file) with Commit and Abort, like
//     cloneio.AtomicFile: nothing at the URL looks like an image until
//     Commit. On S3 the bytes go up as a multipart upload, completed only
//     by Commit and aborted by Abort (a killed process leaves an incomplete
//     upload, which no listing of objects shows; a bucket lifecycle rule
//     AbortIncompleteMultipartUpload removes it). On a web server they are
//     PUT under a temporary name beside the target and renamed into place
//     with WebDAV MOVE; a server without MOVE is refused before the upload
//     starts, naming what to enable.
//
// Memory: an S3 upload holds at most Inflight+1 parts (32 MiB each by
// default, larger after every 1,000 parts so an image of several TiB stays
// within S3's 10,000 parts); an HTTP upload streams through a pipe.
//
// Errors are cloneio/remote's sentinels, so reads and uploads fail alike
// over S3 and HTTP: ErrNotFound (404: no such object or bucket), ErrAccess
// (remote.ErrDenied: 403, an unknown access key, a bad signature; the
// message names the bucket and key and says where credentials come from),
// ErrChanged (the object changed while it was read), ErrNoRange (the
// server ignored a byte range). ErrNoMove is this package's (a web server
// that cannot rename); a target that exists without Force is
// cloneio.ErrExists.
package objstore
