package source

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
)

// ErrSpec is wrapped by errors about an N:/PATH that cannot name a file
// whatever the image holds: a partition number below 1, a bare /PATH on a
// disk with several filesystems, a path with NUL. They are usage mistakes.
var ErrSpec = errors.New("source: invalid N:/PATH")

// specError is an ErrSpec whose message is only its own.
type specError struct{ msg string }

func (e specError) Error() string        { return e.msg }
func (e specError) Is(target error) bool { return target == ErrSpec }

func specErrorf(format string, a ...any) error { return specError{fmt.Sprintf(format, a...)} }

// explained is an error whose message restates its cause in its own words
// and still unwraps to it.
type explained struct {
	msg string
	err error
}

func (e explained) Error() string { return e.msg }
func (e explained) Unwrap() error { return e.err }

// ParseSpec splits "N:/path" into N and the path; a spec without "N:" is
// a bare path (n = 0).
func ParseSpec(spec string) (n int, p string, err error) {
	if i := strings.IndexByte(spec, ':'); i > 0 {
		if v, err := strconv.Atoi(spec[:i]); err == nil {
			if v <= 0 {
				return 0, "", specErrorf("%q: partition numbers start at 1", spec)
			}
			return v, spec[i+1:], nil
		}
	}
	return 0, spec, nil
}

// Location is a resolved N:/PATH: a partition, its filesystem and an
// io/fs path in it (unrooted, "." the root). Nothing is looked up yet.
type Location struct {
	Part *fsdisk.Part
	FS   fsdrivers.Filesystem
	Path string
}

// Resolve finds the filesystem and the path spec names, probing only the
// partition it names (every partition for a bare path).
func (s *Source) Resolve(spec string) (*Location, error) {
	n, p, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	var part *fsdisk.Part
	if n == 0 {
		trees, err := s.Trees()
		if err != nil {
			return nil, err
		}
		if len(trees) != 1 {
			d, _ := s.Layout()
			return nil, specErrorf("%s holds %d filesystems with files (partitions: %s); name one, e.g. %d:%s",
				s.b.Name, len(trees), partitionList(d), firstNumber(trees), p)
		}
		part = trees[0]
	} else if part, err = s.Partition(n); err != nil {
		return nil, err
	}
	fsys, ok := part.Volume.(fsdrivers.Filesystem)
	if !ok {
		why := Describe(part)
		if part.ProbeErr != nil {
			why += ": " + strings.ReplaceAll(part.ProbeErr.Error(), "\n", "; ")
		}
		d, _ := s.Layout()
		// The probe's reasons stay reachable: a corrupt filesystem is
		// damage (fsdrivers.ErrCorrupt), not a mere absence.
		return nil, explained{fmt.Sprintf("partition %d holds no files dimg can read (%s); partitions: %s",
			part.Number, why, partitionList(d)), part.ProbeErr}
	}
	fp, err := fsdrivers.CleanPath(p)
	if err != nil {
		return nil, specErrorf("%s: %v", spec, err)
	}
	return &Location{Part: part, FS: fsys, Path: fp}, nil
}

func firstNumber(parts []*fsdisk.Part) int {
	if len(parts) == 0 {
		return 1
	}
	return parts[0].Number
}

// String shows the location as the user wrote it: "2:/etc/fstab".
func (l *Location) String() string { return l.Show(l.Path) }

// Show shows io/fs path p of the same partition: "2:/etc".
func (l *Location) Show(p string) string {
	if p == "." {
		return fmt.Sprintf("%d:/", l.Part.Number)
	}
	return fmt.Sprintf("%d:/%s", l.Part.Number, p)
}

// Lstat describes the file at the location without following a final
// symlink. A not-found error shows what does exist near the missing name.
func (l *Location) Lstat() (fs.FileInfo, error) {
	fi, err := l.FS.Lstat(l.Path)
	if err == nil {
		return fi, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", l, err)
	}
	return nil, fmt.Errorf("%s: no such file or directory%s", l, l.nearby())
}

// Stat describes the file at the location, following symlinks inside the
// filesystem. A missing name is explained as Lstat does; a symlink to
// nothing is called dangling.
func (l *Location) Stat() (fs.FileInfo, error) {
	fi, err := l.FS.Stat(l.Path)
	if err == nil {
		return fi, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", l, err)
	}
	if _, err := l.Lstat(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s: dangling symlink", l)
}

// Open opens the regular file at the location (following symlinks) for
// reading at random.
func (l *Location) Open() (fsdrivers.File, error) {
	f, err := l.FS.Open(l.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l, err)
	}
	ff, ok := f.(fsdrivers.File)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("%s: driver cannot read at an offset", l)
	}
	return ff, nil
}

// nearby describes, for a missing path, its deepest existing directory
// and the names in it that look like the missing one.
func (l *Location) nearby() string {
	dir, base := path.Dir(l.Path), path.Base(l.Path)
	for dir != "." {
		if fi, err := l.FS.Stat(dir); err == nil && fi.IsDir() {
			break
		}
		dir, base = path.Dir(dir), path.Base(dir)
	}
	ents, err := l.FS.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return ""
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	const show = 12
	if near := similar(base, names); len(near) > 0 {
		return fmt.Sprintf("; similar names in %s: %s", l.Show(dir), strings.Join(near[:min(len(near), show)], ", "))
	}
	more := ""
	if len(names) > show {
		more = fmt.Sprintf(", ... (%d entries)", len(names))
	}
	return fmt.Sprintf("; %s holds: %s%s", l.Show(dir), strings.Join(names[:min(len(names), show)], ", "), more)
}

// similar returns the names that differ from want only in case, start
// with it or contain it, or are within a small edit distance.
func similar(want string, names []string) []string {
	lw := strings.ToLower(want)
	var out []string
	for _, n := range names {
		ln := strings.ToLower(n)
		switch {
		case ln == lw, lw != "" && (strings.HasPrefix(ln, lw) || strings.Contains(ln, lw)):
			out = append(out, n)
		case len(lw) <= 64 && len(ln) <= 64 && editDistance(lw, ln) <= max(1, utf8.RuneCountInString(lw)/4):
			out = append(out, n)
		}
	}
	return out
}

// editDistance is the Levenshtein distance over runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
