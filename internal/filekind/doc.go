// Package filekind is the one answer to "is this path a file, a device or
// a pipe?", asked before a path is opened: opening a FIFO to look at it
// would wait for a writer for ever.
//
// Vocabulary:
//   - Regular: a regular file; read at random, its size is its length.
//   - Block: a block device; read at random, its size comes from the kernel.
//   - Stream: a FIFO, a socket or a character device (a terminal,
//     /dev/fd/N from the shell's <(...)): bytes arrive front to back once,
//     so it can feed a stream reader but never a random-access one.
//   - Dir: a directory.
//   - Other: anything else (a symlink that could not be followed, say).
//
// Every command and library that accepts a path for a disk, an image or a
// target classifies it here, so they agree on what each kind may be used
// for.
package filekind
