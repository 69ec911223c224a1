package source

import (
	"context"
	"fmt"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/progress"
)

// Summary is what an image says about itself without reading its data:
// the header, the disk its metadata describes, and the image bytes spent
// on each partition.
type Summary struct {
	Header *imagefmt.Header
	Disk   *imagefmt.DiskInfo
	// Stored[i] is the image bytes (frames, headers included) holding
	// Disk.Partitions[i]: each frame is shared among the partitions its
	// chunk overlaps, in proportion to the overlap.
	Stored       []int64
	StoredChunks int
	FileSize     int64 // the image file's size
	Digest       [32]byte
	// Commit is the commit opened (a version 1 image has one, commit 1);
	// Commits the number of the image's newest commit.
	Commit  imagefmt.CommitInfo
	Commits int64
	// Features is the incompatible features the commit uses
	// (imagefmt.FeatureString names them).
	Features uint32
	// Bases lists the images under a delta, nearest first: each at the
	// commit the image above it was made over. Empty for a standalone
	// image.
	Bases []BaseInfo
}

// BaseInfo is one image under a delta.
type BaseInfo struct {
	Path   string
	UUID   string
	Commit int64
	Digest [32]byte
}

// Summary reads an image's header, metadata and index (not its data).
func (s *Source) Summary() (*Summary, error) {
	img, err := s.requireImage()
	if err != nil {
		return nil, err
	}
	h := img.Header()
	di, err := imagefmt.ParseDiskInfo(h.Metadata)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.b.Name, err)
	}
	stored := make([]float64, len(di.Partitions))
	for e := range img.Entries() {
		cs, ce := e.Chunk*int64(h.ChunkSize), e.Chunk*int64(h.ChunkSize)+int64(h.ChunkLen(e.Chunk))
		for i, p := range di.Partitions {
			if p.Extended {
				continue
			}
			if o := min(ce, p.Start+p.Size) - max(cs, p.Start); o > 0 {
				stored[i] += float64(e.StoredLen+imagefmt.FrameHeaderSize) * float64(o) / float64(ce-cs)
			}
		}
	}
	if err := img.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", s.b.Name, err)
	}
	sum := &Summary{Header: h, Disk: di, Stored: make([]int64, len(stored)), StoredChunks: img.StoredChunks(),
		FileSize: img.FileSize(), Digest: img.Digest(), Commit: img.Commit(), Commits: img.Commits(),
		Features: img.Features()}
	for b := img.Base(); b != nil; b = b.Base() {
		sum.Bases = append(sum.Bases, BaseInfo{Path: b.Path(), UUID: b.Header().UUIDString(), Commit: b.Commit().Number, Digest: b.Digest()})
	}
	for i, v := range stored {
		sum.Stored[i] = int64(v)
	}
	return sum, nil
}

// VerifyError is a verification that found damage. It wraps
// imagefmt.ErrChecksum (damaged chunks) or imagefmt.ErrCorrupt (every
// chunk sound, but the image digest does not match them).
type VerifyError struct {
	Name     string
	Bad      int // damaged chunks
	Index    int // damaged index nodes or records (version 2)
	DigestOK bool
}

func (e *VerifyError) Error() string {
	switch {
	case e.Bad == 0 && e.Index > 0:
		return fmt.Sprintf("%s: %d problem(s) in the index", e.Name, e.Index)
	case e.Bad == 0 && !e.DigestOK:
		return fmt.Sprintf("%s: image digest does not match its chunks", e.Name)
	case e.Index > 0:
		return fmt.Sprintf("%s: %d damaged chunk(s), %d problem(s) in the index", e.Name, e.Bad, e.Index)
	}
	return fmt.Sprintf("%s: %d damaged chunk(s)", e.Name, e.Bad)
}

func (e *VerifyError) Unwrap() error {
	if e.Bad == 0 {
		return imagefmt.ErrCorrupt
	}
	return imagefmt.ErrChecksum
}

// Verify reads every stored chunk of the image, checks its checksums and
// recomputes the image digest; prog (may be nil) gets a "verifying" phase
// in disk bytes. The result is returned whenever the check ran; damage makes
// the error a *VerifyError beside it.
func (s *Source) Verify(ctx context.Context, prog progress.Reporter) (*imagefmt.VerifyResult, error) {
	return s.VerifyWith(ctx, imagefmt.VerifyOptions{Progress: prog})
}

// VerifyWith is Verify with options: opt.AllCommits checks every commit
// of the image. A delta is verified with every image under it (each at
// the commit the chain reads): a chain is sound only when all are. Damage
// found in a base names the base's file.
func (s *Source) VerifyWith(ctx context.Context, opt imagefmt.VerifyOptions) (*imagefmt.VerifyResult, error) {
	img, err := s.requireImage()
	if err != nil {
		return nil, err
	}
	res, err := img.VerifyWith(ctx, opt)
	if err != nil {
		return nil, err
	}
	for b := img.Base(); b != nil; b = b.Base() {
		br, err := b.VerifyWith(ctx, imagefmt.VerifyOptions{Progress: opt.Progress})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Path(), err)
		}
		for _, c := range br.Bad {
			c.Err = fmt.Errorf("in %s: %w", b.Path(), c.Err)
			res.Bad = append(res.Bad, c)
		}
		for _, e := range br.Index {
			res.Index = append(res.Index, fmt.Errorf("%s: %w", b.Path(), e))
		}
		res.BytesRead += br.BytesRead
		res.DigestOK = res.DigestOK && br.DigestOK
	}
	if !res.OK() {
		return res, &VerifyError{Name: s.b.Name, Bad: len(res.Bad), Index: len(res.Index), DigestOK: res.DigestOK}
	}
	return res, nil
}
