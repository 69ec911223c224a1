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
	sum := &Summary{Header: h, Disk: di, Stored: make([]int64, len(stored)), StoredChunks: img.StoredChunks(),
		FileSize: img.FileSize(), Digest: img.Digest()}
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
	DigestOK bool
}

func (e *VerifyError) Error() string {
	if e.Bad == 0 && !e.DigestOK {
		return fmt.Sprintf("%s: image digest does not match its chunks", e.Name)
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
	img, err := s.requireImage()
	if err != nil {
		return nil, err
	}
	res, err := img.Verify(ctx, prog)
	if err != nil {
		return nil, err
	}
	if !res.OK() {
		return res, &VerifyError{Name: s.b.Name, Bad: len(res.Bad), DigestOK: res.DigestOK}
	}
	return res, nil
}
