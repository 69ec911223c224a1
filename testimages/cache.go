package testimages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// generators maps a kind to its generator and default size.
var generators = map[string]struct {
	build       func(context.Context, string, Spec) (string, error)
	defaultSize int64
}{
	"gpt":     {GPTDisk, defaultGPTSize},
	"mbr":     {MBRDisk, defaultMBRSize},
	"bare":    {BareFS, defaultBareSize},
	"feature": {FeatureDisk, defaultFeatureSize},
	"bios":    {BIOSDisk, defaultBootSize},
	"uefi":    {UEFIDisk, defaultBootSize},
}

// CacheDir is where Cached keeps disks: $DIMG_TESTIMAGES_CACHE, else
// os.UserCacheDir()/dimg-testimages, else the temp dir.
func CacheDir() string {
	if d := os.Getenv("DIMG_TESTIMAGES_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "dimg-testimages")
	}
	return filepath.Join(os.TempDir(), "dimg-testimages")
}

// cacheKey names a build: kind, the spec with defaults applied, how it is
// built (kernel or user space) and the generator version.
func cacheKey(kind string, spec Spec) string {
	if spec.Size == 0 {
		spec.Size = generators[kind].defaultSize
	}
	spec.Size = alignDown(spec.Size, mib)
	spec.UserSpace = spec.UserSpace || !haveKernel()
	boot := 0
	if kind == "bios" || kind == "uefi" {
		boot = bootGeneratorVersion
	}
	b, _ := json.Marshal(struct {
		Kind      string
		Spec      Spec
		Generator int
		Boot      int `json:",omitempty"` // absent for other kinds: their keys stay
	}{kind, spec, generatorVersion, boot})
	h := sha256.Sum256(b)
	return kind + "-" + hex.EncodeToString(h[:8])
}

// Cached returns the path of a disk of the given kind ("gpt", "mbr",
// "bare", "feature") built from spec, building it on first use. Builds are
// serialised per key across processes with a lock file, so parallel test
// binaries build once. The returned file is shared: do not write to it;
// copy it with CopyDisk first.
func Cached(ctx context.Context, kind string, spec Spec) (string, error) {
	g, ok := generators[kind]
	if !ok {
		return "", fmt.Errorf("%w %q", ErrUnknownKind, kind)
	}
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("testimages: cache: %w", err)
	}
	key := cacheKey(kind, spec)
	keyDir := filepath.Join(dir, key)
	path := filepath.Join(keyDir, kind+".img")
	if complete(path) {
		return path, nil
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, key+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if complete(path) { // built by another process while we waited
		return path, nil
	}
	removeStaleTemps(dir, key)
	tmp, err := os.MkdirTemp(dir, key+".tmp-")
	if err != nil {
		return "", fmt.Errorf("testimages: cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if _, err := g.build(ctx, tmp, spec); err != nil {
		return "", err
	}
	os.RemoveAll(keyDir) // an incomplete earlier attempt
	if err := os.Rename(tmp, keyDir); err != nil {
		return "", fmt.Errorf("testimages: cache: %w", err)
	}
	return path, nil
}

// complete reports whether a cached disk and its sidecar (written last)
// both exist.
func complete(path string) bool {
	if _, err := os.Stat(path); err != nil {
		return false
	}
	_, err := os.Stat(path + infoSuffix)
	return err == nil
}

// lockFile takes an exclusive flock, polling so ctx can cancel the wait.
func lockFile(ctx context.Context, p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testimages: cache lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("testimages: cache lock %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// removeStaleTemps removes build directories of key left by killed
// processes. It is called under the key's lock, so none is in use.
func removeStaleTemps(dir, key string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), key+".tmp-") {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}
