// Package fsedit edits a writable filesystem by path: the layer between
// the node-addressed fsdrivers.WritableFS and the commands that name files
// ("dimg add IMAGE ./drivers 2:/lib/modules/6.1/extra/").
//
// Vocabulary:
//   - path: an io/fs path inside the filesystem ("etc/fstab", "." the
//     root), as fsdrivers.CleanPath makes it from what a user typed.
//   - resolve: walk a path from the root with Lookup. Symbolic links met
//     on the way are followed inside the filesystem: an absolute target
//     starts again at the filesystem's root, never at the host's, and ".."
//     at the root stays there. The last component is followed only when
//     asked (Stat vs Lstat).
//   - local: a file or tree on the host that CopyIn copies in.
//   - plan: what CopyIn will create, built and checked (conflicts, space,
//     inodes) before anything is written, so a refused copy writes
//     nothing.
//
// Nothing here is atomic by itself: an edit that fails half-way leaves
// the WritableFS half-edited. The caller makes edits atomic one level
// down, by writing through a copy-on-write overlay that is committed only
// when everything succeeded and discarded otherwise (cloneio/edit).
//
// Errors are *fs.PathError values naming the path as the user sees it
// (FS.Prefix + "/" + path, e.g. "2:/etc/fstab") around the driver's
// error, which wraps a syscall.Errno: errors.Is(err, fs.ErrExist),
// errors.Is(err, syscall.ENOSPC) work. A shortage found before writing is
// a *SpaceError that says how much is missing.
package fsedit
