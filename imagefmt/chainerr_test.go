package imagefmt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChainErrorNamesFile: damage in a base found through a delta chain
// names the base's file, whose offsets the error gives. Before, `dimg
// restore d2.dimg` said "chunk 0 ...: payload CRC at file offset 13350",
// an offset in base.dimg that the user would look for in d2.dimg.
func TestChainErrorNamesFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := newDisk(20*64<<10, 64<<10)
	basePath := filepath.Join(dir, "base.dimg")
	if err := os.WriteFile(basePath, writeV2(t, d, WriterOptions{}), 0o644); err != nil {
		t.Fatal(err)
	}
	base, err := Open(basePath)
	if err != nil {
		t.Fatal(err)
	}
	// Chunk 0 stays the base's: d1 and d2 change other chunks.
	var c0 Entry
	for e := range base.Entries() {
		c0 = e
		break
	}
	change := func(c int64) func(func(ChunkChange, error) bool) {
		return func(yield func(ChunkChange, error) bool) {
			yield(ChunkChange{Chunk: c, State: ChunkZero}, nil)
		}
	}
	e1, err := CreateDelta(ctx, filepath.Join(dir, "d1.dimg"), base, "base.dimg", change(c0.Chunk+1), CommitOptions{}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e2, err := CreateDelta(ctx, filepath.Join(dir, "d2.dimg"), e1.Reader(), "d1.dimg", change(c0.Chunk+2), CommitOptions{}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e2.Close()
	e1.Close()
	base.Close()

	b, _ := os.ReadFile(basePath)
	for _, c := range []struct {
		name string
		off  int64 // byte to damage in base.dimg
	}{
		{"payload", c0.Offset + FrameHeaderSize + 10},
		{"frame header", c0.Offset + 30},
	} {
		bad := append([]byte(nil), b...)
		bad[c.off] ^= 0xff
		os.WriteFile(basePath, bad, 0o644)
		r, err := OpenChain(filepath.Join(dir, "d2.dimg"), ReaderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = r.ReadChunk(c0.Chunk, nil)
		if err == nil || !strings.Contains(err.Error(), "in "+basePath+": ") || !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: ReadChunk: %v, want the base's file named", c.name, err)
		}
		// A restore reads frames and decodes them itself.
		f, _, err := r.ReadFrame(c0.Chunk, nil)
		if err == nil {
			_, err = f.Decode(nil)
		}
		if err == nil || !strings.Contains(err.Error(), "in "+basePath+": ") || strings.Count(err.Error(), basePath) != 1 {
			t.Errorf("%s: ReadFrame+Decode: %v, want the base's file named once", c.name, err)
		}
		r.Close()
	}
}
