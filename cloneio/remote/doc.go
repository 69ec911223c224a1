// Package remote reads images that live on a web server or in an object
// store: an object is opened with one small request and read by byte
// ranges, in parallel, with retries, through a local cache, so a command
// that takes an IMAGE argument reads a URL like a file and fetches only
// what it touches.
//
// Vocabulary:
//   - Backend: reads the objects of one or more URL schemes. HTTP (this
//     package, for http:// and https://) and S3 (cloneio/remote/s3, for
//     s3://bucket/key) implement it; the command passes the backends in
//     (Options.Backends), none registers itself.
//   - Object: one opened object: its size, its Identity and ReadRange.
//     A backend does one thing per call and reports what happened; the
//     retries, timeouts, parallelism and caching are File's, written once
//     for every backend.
//   - Identity: what names one version of an object (URL, size, ETag,
//     Last-Modified). Every range read is checked against it: an object
//     replaced while it is read fails with ErrChanged rather than mixing
//     bytes of two versions.
//   - File: an io.ReaderAt over an Object (what imagefmt.NewReader
//     reads). It retries transient failures with backoff, resumes a body
//     cut short where it stopped, reads ahead in parallel when it sees a
//     sequential read (a restore), and keeps the small reads (the header,
//     index nodes, commit records) in the Cache.
//   - Cache: a directory of entries (default under os.UserCacheDir()/dimg),
//     bounded in bytes, least recently used evicted, shared by processes:
//     entries are written to a temporary file and renamed into place, and
//     checked (length and CRC) when read, so a torn or truncated entry is
//     a miss, never data. It holds an image's frames keyed by image and
//     chunk checksum (imagefmt.FrameKey, see Cache.Frames) and a File's
//     small reads keyed by the object's Identity.
//   - Client: the backends, the cache and the knobs; Client.Open opens a
//     URL as a File, Client.Opener lets imagefmt.OpenChain open a delta
//     and its bases wherever they are.
//
// Trust: the server is not trusted to return the right bytes. Every chunk
// is checked by imagefmt against the SHA-256 its index records before it
// is used (a server that returns wrong bytes gets a *imagefmt.ChunkError
// naming the chunk); the index itself is hash-checked up to the commit's
// digest. This package adds the checks a transfer needs: the range that
// came back is the range asked for, of the same version of the object.
//
// Errors: ErrNotFound (404, 410, no such key), ErrDenied (401, 403 after
// the redirect was resolved again), ErrNoRange (the server sends the whole
// object to a range request), ErrChanged (another version of the object);
// these are never retried. Everything else (connection refused or reset,
// a timeout, a 5xx, a short body, a wrong range) is retried with backoff
// and reported, with the URL and the byte range, once the retries are
// spent.
package remote
