// Package extract copies files out of a read-only fsdrivers.Filesystem onto
// the host, and walks such a filesystem for listings.
//
// Vocabulary:
//   - source path: an io/fs path inside the filesystem ("." is its root);
//     fsdrivers.CleanPath turns a user's "/etc/fstab" into "etc/fstab".
//   - dest: the host path the user names. When it is an existing directory
//     the source goes inside it under its own name (as cp does); extracting
//     the root "." fills dest itself.
//   - entry: one directory entry of the source tree; its name comes from the
//     image and is untrusted.
//   - Walk / Entry: a listing helper for `ls -R` and `ls --json`: fs.WalkDir
//     made safe for corrupt trees (unsafe names reported, loops and depth
//     bounded), and a JSON-ready description of one file.
//
// It sits at the cloneio floor, not beside the drivers, because it writes to
// the host (files, chown, mknod, xattrs); the drivers only read.
//
// Safety: an image is hostile input. Every name is checked to be one path
// component (fsdrivers.CheckName: "", ".", "..", names with "/" or NUL are
// refused), every file is created relative to an open directory descriptor
// with O_NOFOLLOW and O_EXCL (openat-style), so no symlink — from the image
// or already on the host inside dest — is ever traversed, and nothing is
// written outside dest.
// Symlinks are recreated as links, never followed. Directory loops and
// absurd depths in a corrupt filesystem end with an error, not a hang.
//
// Preserved: content (holes stay holes when the source is sparse), mode
// bits including setuid/setgid/sticky, owner and group (when running as
// root), atime and mtime, symlinks, hard links (same inode number with a
// link count above one become os.Link), device nodes and fifos (devices
// only as root), and extended attributes where the host filesystem and our
// privileges allow (user.* as anyone, the rest as root).
//
// Errors on single entries (a damaged file, a refused name, an existing
// file without Options.Force) do not stop the extraction: they are
// collected, the rest is extracted, and Extract returns them joined.
package extract
