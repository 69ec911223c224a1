package imagefmt

import "fmt"

// ChunkState is what an image holds for one chunk (FORMAT.md, "Chunks").
type ChunkState uint8

const (
	// ChunkUnused: not in use on the source. Reads as zeros; a restore to
	// a device leaves it alone (or discards it on request).
	ChunkUnused ChunkState = iota
	// ChunkZero: in use and all zero, inside a zero run. A restore to a
	// device must zero it.
	ChunkZero
	// ChunkStored: stored in a frame.
	ChunkStored
)

func (s ChunkState) String() string {
	switch s {
	case ChunkUnused:
		return "unused"
	case ChunkZero:
		return "zero"
	case ChunkStored:
		return "stored"
	}
	return fmt.Sprintf("ChunkState(%d)", uint8(s))
}
