package ext4

import (
	"encoding/binary"
	"fmt"

	"github.com/dimg-project/dimg/fsdrivers"
)

// The jbd2 journal, as described in the kernel's
// Documentation/filesystems/ext4/journal.rst. Everything in the journal is
// big-endian, unlike the rest of ext4.
//
// Vocabulary:
//   - journal block: a block of the journal file (inode s_journal_inum),
//     the same size as a filesystem block. Block 0 is the journal
//     superblock; the log occupies blocks [s_first, last), where last is
//     s_maxlen less the fast-commit area when there is one.
//   - transaction (tid, "sequence"): descriptor blocks, each followed by
//     the data blocks its tags describe, optional revoke blocks, and a
//     commit block, all carrying the transaction's sequence in their
//     header. The log starts at s_start with transaction s_sequence and
//     wraps from last back to s_first. s_start == 0 means "clean".
//   - tag: one logged block: its home block number in the filesystem
//     (32 or 64 bits), flags (escaped, same UUID, last tag) and a checksum
//     of the logged data (csum v2: 16 bits, v3: 32 bits).
//   - escaped block: a logged block whose first four bytes were the jbd2
//     magic; they are zeroed in the log so the block is not taken for a
//     header, and restored on replay.
//   - revoke: a list of home blocks whose older logged copies must not be
//     replayed (the block was freed and may now hold file data).

const (
	jMagic = 0xC03B3998

	jDescriptor = 1
	jCommit     = 2
	jSuperV1    = 3
	jSuperV2    = 4
	jRevoke     = 5

	jHdrSize = 12

	// s_feature_compat
	jCompatChecksum = 0x1 // v1: a crc32 of the transaction in the commit block
	// s_feature_incompat
	jIncompatRevoke      = 0x1
	jIncompat64bit       = 0x2
	jIncompatAsyncCommit = 0x4
	jIncompatCsumV2      = 0x8
	jIncompatCsumV3      = 0x10
	jIncompatFastCommit  = 0x20
	jIncompatKnown       = jIncompatRevoke | jIncompat64bit | jIncompatAsyncCommit |
		jIncompatCsumV2 | jIncompatCsumV3 | jIncompatFastCommit

	// tag flags
	jFlagEscape   = 0x1
	jFlagSameUUID = 0x2
	jFlagDeleted  = 0x4
	jFlagLastTag  = 0x8

	jChecksumCRC32  = 1 // commit block h_chksum_type, v1 checksums
	jChecksumCRC32C = 4 // s_checksum_type for csum v2/v3

	jDefaultFCBlocks = 256 // fast-commit blocks when s_num_fc_blks is 0
	jTailSize        = 4   // checksum tail of descriptor and revoke blocks (v2/v3)

	// Fast commit tags (ext4's fast_commit format, little-endian
	// tag/length pairs) — only the head is looked at, to tell an empty
	// fast-commit area from one that needs replaying.
	fcTagHead = 0x0009
)

// ext4 superblock fields the journal code uses (offsets into the 1024-byte
// superblock).
const (
	sbJournalUUID   = 0xD0
	sbJournalInum   = 0xE0
	sbJournalDev    = 0xE4
	sbOffLastOrphan = 0xE8
	sbOffState      = 0x3A
	stateErrorFS    = 0x2 // s_state: errors detected
	sbOffChecksum   = 0x3FC
)

// jsuper is the decoded journal superblock.
type jsuper struct {
	version      int // 1 or 2
	blockSize    uint32
	maxLen       uint32
	first        uint32
	sequence     uint32
	start        uint32
	errno        int32
	compat       uint32
	incompat     uint32
	roCompat     uint32
	uuid         [16]byte
	checksumType uint8
	numFC        uint32
	checksum     uint32
}

func parseJSuper(b []byte) (jsuper, error) {
	be := binary.BigEndian
	var s jsuper
	if be.Uint32(b) != jMagic {
		return s, corruptf("journal superblock: no jbd2 magic")
	}
	switch be.Uint32(b[4:]) {
	case jSuperV1:
		s.version = 1
	case jSuperV2:
		s.version = 2
	default:
		return s, corruptf("journal superblock: block type %d", be.Uint32(b[4:]))
	}
	s.blockSize = be.Uint32(b[0xC:])
	s.maxLen = be.Uint32(b[0x10:])
	s.first = be.Uint32(b[0x14:])
	s.sequence = be.Uint32(b[0x18:])
	s.start = be.Uint32(b[0x1C:])
	s.errno = int32(be.Uint32(b[0x20:]))
	if s.version == 2 {
		s.compat = be.Uint32(b[0x24:])
		s.incompat = be.Uint32(b[0x28:])
		s.roCompat = be.Uint32(b[0x2C:])
		copy(s.uuid[:], b[0x30:0x40])
		s.checksumType = b[0x50]
		s.numFC = be.Uint32(b[0x54:])
		s.checksum = be.Uint32(b[0xFC:])
	}
	return s, nil
}

// csumV23 says whether the journal uses v2 or v3 checksums (crc32c of the
// journal UUID as seed; descriptor, revoke and commit blocks and every tag
// checksummed).
func (s *jsuper) csumV23() bool { return s.incompat&(jIncompatCsumV2|jIncompatCsumV3) != 0 }

// tagBytes is the size of one descriptor tag, without the UUID that
// follows a tag lacking the same-UUID flag.
func (s *jsuper) tagBytes() int {
	if s.incompat&jIncompatCsumV3 != 0 {
		return 16 // blocknr, flags, blocknr_high, checksum: fixed size
	}
	n := 12 // blocknr, checksum (16 bits), flags (16 bits), blocknr_high
	if s.incompat&jIncompatCsumV2 != 0 {
		n += 2
	}
	if s.incompat&jIncompat64bit == 0 {
		n -= 4
	}
	return n
}

// jsuperChecksum is the v2/v3 journal superblock checksum: crc32c over the
// 1024-byte structure with s_checksum zeroed.
func jsuperChecksum(b []byte) uint32 {
	var tmp [1024]byte
	copy(tmp[:], b[:1024])
	binary.BigEndian.PutUint32(tmp[0xFC:], 0)
	return crc32c(^uint32(0), tmp[:])
}

// tidGT compares transaction ids the way jbd2 does: modulo 2^32, so the
// log keeps working when the sequence wraps.
func tidGT(x, y uint32) bool { return int32(x-y) > 0 }

// errExternalJournal is returned for filesystems whose journal lives on
// another device: dimg sees one partition and cannot replay it.
func errExternalJournal(sb []byte) error {
	le := binary.LittleEndian
	var u [16]byte
	copy(u[:], sb[sbJournalUUID:sbJournalUUID+16])
	return fmt.Errorf("ext4: the journal is on an external device (uuid %x-%x-%x-%x-%x, device %#x): "+
		"replay it with e2fsck -fy and the journal device first: %w",
		u[0:4], u[4:6], u[6:8], u[8:10], u[10:16], le.Uint32(sb[sbJournalDev:]), fsdrivers.ErrReadOnly)
}

// crc32be is the big-endian (non-reflected) CRC-32, polynomial 0x04C11DB7,
// without pre or post inversion: what jbd2's v1 commit checksum uses.
var crc32beTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04C11DB7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc32be(crc uint32, p []byte) uint32 {
	for _, b := range p {
		crc = crc<<8 ^ crc32beTable[byte(crc>>24)^b]
	}
	return crc
}
