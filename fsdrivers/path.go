package fsdrivers

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// ErrUnsafeName is wrapped when a path or a name is not something that can
// be used as given: a user's path with NUL, or a directory entry name from
// an image that is not exactly one path component.
var ErrUnsafeName = errors.New("fsdrivers: unsafe name")

// CleanPath turns a user's path inside a filesystem ("/", "/etc/", "etc//x")
// into an io/fs path ("." for the root). It never returns a path above the
// root: ".." at the top stays at the top, as in a chroot.
func CleanPath(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: path %q contains NUL", ErrUnsafeName, p)
	}
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if c == "" {
		return ".", nil
	}
	if !fs.ValidPath(c) {
		return "", fmt.Errorf("%w: path %q", ErrUnsafeName, p)
	}
	return c, nil
}

// CheckName refuses a directory entry name, read from an image, that is
// not exactly one path component a host (or the kernel, through FUSE)
// would take as given: "", ".", "..", names with "/" or NUL, and names
// longer than NAME_MAX (255 bytes). Drivers return such names as they are
// stored; whoever turns them into host names checks them here.
func CheckName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("%w: %q", ErrUnsafeName, name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w: %q contains '/' or NUL", ErrUnsafeName, name)
	case len(name) > 255:
		return fmt.Errorf("%w: name of %d bytes", ErrUnsafeName, len(name))
	}
	return nil
}
