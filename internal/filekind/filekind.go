package filekind

import (
	"io/fs"
	"os"
)

// Kind is what a path names, as far as reading or writing a disk goes.
type Kind int

const (
	Other Kind = iota
	Regular
	Block
	Stream
	Dir
)

var names = [...]string{Other: "other", Regular: "regular file", Block: "block device", Stream: "stream", Dir: "directory"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(names) {
		return "other"
	}
	return names[k]
}

// RandomAccess reports whether bytes of this kind can be read at any
// offset: a regular file or a block device.
func (k Kind) RandomAccess() bool { return k == Regular || k == Block }

// Of classifies a file mode.
func Of(m fs.FileMode) Kind {
	switch {
	case m.IsRegular():
		return Regular
	case m.IsDir():
		return Dir
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0:
		return Block
	case m&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeCharDevice) != 0:
		return Stream
	}
	return Other
}

// Stat classifies path (following symlinks) without opening it, and
// returns its FileInfo for the caller's other questions (size, time).
func Stat(path string) (Kind, fs.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Other, nil, err
	}
	return Of(st.Mode()), st, nil
}

// Is reports whether path exists and is of kind k.
func Is(path string, k Kind) bool {
	got, _, err := Stat(path)
	return err == nil && got == k
}
