package imagefmt

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for bad input wraps
// exactly one of ErrFormat, ErrCorrupt and ErrChecksum, so a caller maps
// them to exit codes once; the detail (which rule, where) is in a
// *RuleError and, for a chunk, a *ChunkError around it.
var (
	// ErrFormat: the bytes are not a dimg image at all (no magic), or an
	// image of a version this package does not read.
	ErrFormat = errors.New("imagefmt: not a dimg image")
	// ErrCorrupt: a dimg image that breaks a structural rule of FORMAT.md
	// ("Validity"), including one that is incomplete (rule "end": an
	// interrupted capture, a truncated copy).
	ErrCorrupt = errors.New("imagefmt: image is corrupt")
	// ErrChecksum: a chunk's stored bytes do not match their checksums
	// (payload CRC32C, lz4 block, SHA-256).
	ErrChecksum = errors.New("imagefmt: chunk checksum mismatch")
)

// ErrTruncated is ErrCorrupt: an incomplete image breaks rule "end".
//
// Deprecated: use ErrCorrupt. Kept so that errors.Is(err, ErrTruncated)
// in older callers still matches.
var ErrTruncated = ErrCorrupt

// Rule names one structural rule of FORMAT.md ("Validity"); the names are
// the ones the spec uses, so an error message can be looked up there.
type Rule string

// The rules of a version-1 image, in the order a reader meets them.
const (
	RuleMagic        Rule = "magic"          // the file starts with the 8-byte magic (else ErrFormat)
	RuleVersion      Rule = "version"        // the format version is one this reader knows (else ErrFormat)
	RuleHeaderLength Rule = "header-length"  // H = 72 + T + M, 72 ≤ H ≤ 16 MiB
	RuleHeaderCRC    Rule = "header-crc"     // the header's CRC32C
	RuleGeometry     Rule = "geometry"       // sector size, chunk size, disk size, chunk count
	RuleReserved     Rule = "reserved"       // every reserved field and the header flags are zero
	RuleToolVersion  Rule = "tool-version"   // T ≤ 4096, UTF-8
	RuleMetadata     Rule = "metadata"       // M bytes fill the header: empty or one JSON object
	RuleLayout       Rule = "layout"         // records follow one another without gaps, each where the index says
	RuleOrder        Rule = "order"          // records in strictly increasing chunk order, never overlapping
	RuleFrameCRC     Rule = "frame-crc"      // a frame header's CRC32C
	RuleFrame        Rule = "frame"          // a frame header's fields (method, chunk, lengths)
	RuleZeroRunCRC   Rule = "zero-run-crc"   // a zero-run record's CRC32C
	RuleZeroRun      Rule = "zero-run"       // a zero-run record's fields
	RuleEnd          Rule = "end"            // the file ends exactly with the footer
	RuleFooterCRC    Rule = "footer-crc"     // the footer's CRC32C
	RuleFooterHeader Rule = "footer-header"  // footer version and UUID equal the header's
	RuleIndexLoc     Rule = "index-location" // the footer's counts and index offset fit the file
	RuleIndexCRC     Rule = "index-crc"      // the index's CRC32C, kept in the footer
	RuleIndexHeader  Rule = "index-header"   // the index header's counts equal the footer's
	RuleIndexEntries Rule = "index-entries"  // frame entries: increasing chunks, in range, plausible lengths
	RuleZeroRuns     Rule = "zero-runs"      // index zero runs: increasing, merged, in range, no stored chunk inside
	RuleFrameBytes   Rule = "frame-bytes"    // the footer's frame-byte total
	RuleIndexMatch   Rule = "index-match"    // the records found in the data area are the ones the index lists
	RuleDigest       Rule = "digest"         // the footer's digest is the digest of the chunks' sums
	RulePayloadCRC   Rule = "payload-crc"    // a payload's CRC32C (ErrChecksum)
	RulePayload      Rule = "payload"        // a payload decompresses to exactly L bytes (ErrChecksum)
	RuleChunkSum     Rule = "chunk-sha256"   // the chunk's SHA-256 (ErrChecksum)
)

// RuleError is a broken rule: which one, where in the image file, and the
// sentinel it wraps (ErrFormat, ErrCorrupt or ErrChecksum).
type RuleError struct {
	Rule   Rule
	Offset int64 // file offset of the structure or field found wrong
	Detail string
	Err    error // the sentinel
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("%v: %s (rule %s at file offset %d)", e.Err, e.Detail, e.Rule, e.Offset)
}

func (e *RuleError) Unwrap() error { return e.Err }

// broken returns a *RuleError wrapping ErrCorrupt.
func broken(rule Rule, off int64, format string, args ...any) error {
	return &RuleError{Rule: rule, Offset: off, Detail: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}

// notImage returns a *RuleError wrapping ErrFormat.
func notImage(rule Rule, off int64, format string, args ...any) error {
	return &RuleError{Rule: rule, Offset: off, Detail: fmt.Sprintf(format, args...), Err: ErrFormat}
}

// badSum returns a *RuleError wrapping ErrChecksum.
func badSum(rule Rule, off int64, format string, args ...any) error {
	return &RuleError{Rule: rule, Offset: off, Detail: fmt.Sprintf(format, args...), Err: ErrChecksum}
}

// ended reports that the file ends at off where the rules want more bytes.
func ended(off int64, what string) error {
	return broken(RuleEnd, off, "the file ends in the %s: the image is incomplete (an interrupted capture or copy) or truncated", what)
}

// ruleOf is the rule err breaks, or "".
func ruleOf(err error) Rule {
	var re *RuleError
	if errors.As(err, &re) {
		return re.Rule
	}
	return ""
}

// ChunkError names the chunk and disk byte range a failure concerns.
type ChunkError struct {
	Chunk    int64
	Off, Len int64 // disk byte range of the chunk
	Err      error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("chunk %d (disk bytes %d-%d): %v", e.Chunk, e.Off, e.Off+e.Len-1, e.Err)
}
func (e *ChunkError) Unwrap() error { return e.Err }

// fileError names the file of a delta chain where a failure was found,
// when it is a base and not the image opened: the offsets in err are in
// that file.
type fileError struct {
	path string
	err  error
}

func (e *fileError) Error() string { return fmt.Sprintf("in %s: %v", e.path, e.err) }
func (e *fileError) Unwrap() error { return e.err }

// inFile wraps err in a fileError for path, unless path is unknown or a
// base further down already named its own file.
func inFile(path string, err error) error {
	var fe *fileError
	if err == nil || path == "" || errors.As(err, &fe) {
		return err
	}
	return &fileError{path: path, err: err}
}
