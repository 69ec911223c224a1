// Package edit is the one way dimg opens an image to change files in one
// of its filesystems and commits the change: the offline edit commands
// (dimg add, rm, mkdir, mv, chmod, chown, ln, put) and personalization use
// it.
//
// The flow: imagefmt.OpenSession (the image's writer lock and a
// copy-on-write overlay over its newest commit), the partition's section
// of the overlay, the filesystem driver's OpenWritable on it, the edits
// (package fsedit), then Commit: WritableFS.Sync (a filesystem its checker
// finds clean), Session.Commit with the message. Anything that fails
// before the commit ends in Discard, which drops the overlay: the image is
// exactly as it was. A kill -9 at any point leaves the image at its state
// before or after the commit (the overlay's scratch file is dropped by the
// next edit, never committed: its changes were never synced as complete).
//
// Vocabulary: an Edit is one open session on one partition; spec is the
// user's "N:/path".
package edit
