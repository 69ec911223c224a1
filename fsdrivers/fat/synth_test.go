package fat

import (
	"encoding/binary"
	"fmt"
	"path"
	"testing"
	"time"
	"unicode/utf16"
)

// This file builds small FAT12 images byte by byte, so negative tests and
// fuzz seeds need no external tool and can place exactly the corruption
// they test. The real-world oracle tests (mkfs.vfat, mtools, fsck.fat) are
// in oracle_test.go; TestSynthFsck checks these images with fsck.fat too.

// snode is a file or directory of a synthetic image.
type snode struct {
	name     string
	dir      bool
	data     []byte
	children []*snode
	// short, when set, is the raw 11-byte 8.3 name and no long-name entries
	// are written; nt is then DIR_NTRes (case flags).
	short    string
	nt       byte
	readOnly bool
	fragment bool // allocate every other cluster, leaving free gaps
}

// sinfo is where the builder put a node.
type sinfo struct {
	first    uint32 // first cluster
	entryOff int64  // byte offset of the short entry
	clusters []uint32
}

// synth is a built FAT12 image: 512-byte sectors, one sector per cluster,
// one reserved sector, two FATs, 64 root entries.
type synth struct {
	img          []byte
	fat32        bool
	reserved     int // sectors
	fatSectors   int
	rootOffset   int64 // FAT12 fixed root
	rootClusters []uint32
	dataOffset   int64
	clusters     uint32
	nextCluster  uint32
	allocated    uint32
	short        int
	info         map[string]*sinfo
}

var synthTime = time.Date(2021, 6, 15, 12, 34, 56, 0, time.UTC)

const (
	synthRootEntries = 64 // FAT12 fixed root
	synthSerial      = 0xDEADBEEF
)

func fatDate(t time.Time) uint16 {
	return uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
}

func fatClock(t time.Time) uint16 {
	return uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
}

// buildSynth makes a FAT12 image of sectors 512-byte sectors holding root's
// children.
func buildSynth(tb testing.TB, sectors int, root []*snode) *synth {
	return buildSynthFAT(tb, sectors, false, root)
}

// buildSynthFAT makes a FAT12 image or, with fat32, an image with the FAT32
// layout (32-bit entries, root directory in clusters; too few clusters for
// the specification's FAT32, which readers accept as mkfs.fat makes such
// volumes too).
func buildSynthFAT(tb testing.TB, sectors int, fat32 bool, root []*snode) *synth {
	tb.Helper()
	s := &synth{img: make([]byte, sectors*512), fat32: fat32, info: map[string]*sinfo{}, nextCluster: 2, reserved: 1}
	rootSectors := synthRootEntries * 32 / 512
	if fat32 {
		s.reserved, rootSectors = 8, 0
	}
	// Smallest FAT that holds every cluster the rest leaves room for.
	for s.fatSectors = 1; ; s.fatSectors++ {
		clusters := sectors - s.reserved - 2*s.fatSectors - rootSectors
		need := (clusters+2)*3/2 + 1
		if fat32 {
			need = (clusters + 2) * 4
		}
		if need <= s.fatSectors*512 {
			s.clusters = uint32(clusters)
			break
		}
	}
	if !fat32 && s.clusters >= fat12Limit {
		tb.Fatalf("synth: %d clusters is not FAT12", s.clusters)
	}
	s.rootOffset = int64(s.reserved+2*s.fatSectors) * 512
	s.dataOffset = s.rootOffset + int64(rootSectors)*512

	b := s.img
	le := binary.LittleEndian
	copy(b, []byte{0xEB, 0x3C, 0x90})
	copy(b[3:], "SYNTH   ")
	le.PutUint16(b[11:], 512)
	b[13] = 1
	le.PutUint16(b[14:], uint16(s.reserved))
	b[16] = 2
	if fat32 { // FAT32 keeps BPB_TotSec16 zero
		le.PutUint32(b[32:], uint32(sectors))
	} else {
		le.PutUint16(b[19:], uint16(sectors))
	}
	b[21] = 0xF8
	le.PutUint16(b[24:], 32) // sectors per track and heads: mtools wants them
	le.PutUint16(b[26:], 8)
	ext := 36
	if fat32 {
		b[0], b[1] = 0xEB, 0x58
		le.PutUint32(b[36:], uint32(s.fatSectors))
		le.PutUint32(b[44:], 2) // root cluster, allocated first below
		le.PutUint16(b[48:], 1) // FSInfo sector
		ext = 64
		copy(b[ext+18:], "FAT32   ")
		// FSInfo with unknown free count and hint.
		fi := b[512:1024]
		le.PutUint32(fi[0:], 0x41615252)
		le.PutUint32(fi[484:], 0x61417272)
		le.PutUint32(fi[488:], 0xFFFFFFFF)
		le.PutUint32(fi[492:], 0xFFFFFFFF)
		le.PutUint32(fi[508:], 0xAA550000)
	} else {
		le.PutUint16(b[17:], synthRootEntries)
		le.PutUint16(b[22:], uint16(s.fatSectors))
		copy(b[ext+18:], "FAT12   ")
	}
	b[ext] = 0x80
	b[ext+2] = 0x29
	le.PutUint32(b[ext+3:], synthSerial)
	copy(b[ext+7:], "SYNTH VOL  ")
	b[510], b[511] = 0x55, 0xAA
	s.SetFAT(0, 0x0FFFFFF8)
	s.SetFAT(1, 0x0FFFFFFF)

	// Root: a volume label first, then the tree.
	entries := []entry{{b: shortEntry("SYNTH VOL  ", attrVolumeID, 0, 0, 0)}}
	if fat32 {
		s.rootClusters = s.alloc(tb, (dirEntries(root)*32+511)/512, false)
	}
	entries = append(entries, s.children(tb, "", root, 0)...)
	if fat32 {
		s.placeDir(s.rootClusters, entries)
		// FSInfo free count and hint, and the backup boot sector (6) and
		// FSInfo (7), as fsck.fat expects them.
		le.PutUint32(b[512+488:], s.clusters-s.allocated)
		le.PutUint32(b[512+492:], s.nextCluster)
		le.PutUint16(b[50:], 6)
		copy(b[6*512:], b[:1024])
		return s
	}
	if len(entries) > synthRootEntries {
		tb.Fatalf("synth: %d root entries", len(entries))
	}
	for i, e := range entries {
		off := s.rootOffset + int64(i)*32
		copy(b[off:], e.b)
		if e.in != nil {
			e.in.entryOff = off
		}
	}
	return s
}

// dirEntries counts the entries a directory of nodes needs (plus the label
// or the dot entries: 2).
func dirEntries(nodes []*snode) int {
	count := 2
	for _, c := range nodes {
		count++
		if c.short == "" {
			count += (len(utf16.Encode([]rune(c.name))) + 12) / 13
		}
	}
	return count
}

// placeDir writes entries over a directory's clusters and records offsets.
func (s *synth) placeDir(cs []uint32, entries []entry) {
	buf := make([]byte, 0, len(cs)*512)
	for _, e := range entries {
		buf = append(buf, e.b...)
	}
	offs := s.writeChain(cs, buf)
	for i, e := range entries {
		if e.in != nil {
			e.in.entryOff = offs[i*32/512] + int64(i*32%512)
		}
	}
}

// entry is a 32-byte directory entry and, for a node's short entry, the
// node's info (its offset is recorded when the entry is placed).
type entry struct {
	b  []byte
	in *sinfo
}

// children encodes the entries of one directory (parent at cluster
// parentFirst, 0 = root) and allocates and writes everything below.
func (s *synth) children(tb testing.TB, dir string, nodes []*snode, parentFirst uint32) []entry {
	var out []entry
	for _, n := range nodes {
		p := path.Join(dir, n.name)
		in := &sinfo{entryOff: -1}
		s.info[p] = in
		var size uint32
		switch {
		case n.dir:
			in.clusters = s.alloc(tb, (dirEntries(n.children)*32+511)/512, n.fragment)
		default:
			size = uint32(len(n.data))
			in.clusters = s.alloc(tb, (len(n.data)+511)/512, n.fragment)
		}
		if len(in.clusters) > 0 {
			in.first = in.clusters[0]
		}
		var raw string
		if n.short != "" {
			raw = n.short
		} else {
			s.short++
			raw = fmt.Sprintf("N%07d   ", s.short)
		}
		attr := byte(0x20)
		if n.dir {
			attr = attrDirectory
		}
		if n.readOnly {
			attr |= attrReadOnly
		}
		if n.short == "" {
			for _, l := range lfnEntries(n.name, shortSum([]byte(raw))) {
				out = append(out, entry{b: l})
			}
		}
		out = append(out, entry{b: shortEntry(raw, attr, n.nt, in.first, size), in: in})

		// Contents.
		if n.dir {
			sub := []entry{
				{b: shortEntry(".          ", attrDirectory, 0, in.first, 0)},
				{b: shortEntry("..         ", attrDirectory, 0, parentFirst, 0)},
			}
			sub = append(sub, s.children(tb, p, n.children, in.first)...)
			s.placeDir(in.clusters, sub)
		} else {
			s.writeChain(in.clusters, n.data)
		}
	}
	return out
}

// alloc takes n free clusters, contiguous or every other one.
func (s *synth) alloc(tb testing.TB, n int, fragment bool) []uint32 {
	var cs []uint32
	for range n {
		if s.nextCluster > s.clusters+1 {
			tb.Fatalf("synth: out of clusters")
		}
		cs = append(cs, s.nextCluster)
		s.allocated++
		s.nextCluster++
		if fragment {
			s.nextCluster++
		}
	}
	for i, c := range cs {
		if i+1 < len(cs) {
			s.SetFAT(c, cs[i+1])
		} else {
			s.SetFAT(c, 0x0FFFFFFF)
		}
	}
	return cs
}

// writeChain writes data over the clusters; it returns each cluster's offset.
func (s *synth) writeChain(cs []uint32, data []byte) []int64 {
	offs := make([]int64, len(cs))
	for i, c := range cs {
		offs[i] = s.ClusterOffset(c)
		lo := i * 512
		if lo < len(data) {
			copy(s.img[offs[i]:offs[i]+512], data[lo:])
		}
	}
	return offs
}

// BadMark is the bad-cluster FAT value of the image's FAT type.
func (s *synth) BadMark() uint32 {
	if s.fat32 {
		return 0x0FFFFFF7
	}
	return 0xFF7
}

func (s *synth) ClusterOffset(c uint32) int64 { return s.dataOffset + int64(c-2)*512 }

// SetFAT writes entry c = v into both FATs (v truncated to 12 bits on FAT12).
func (s *synth) SetFAT(c, v uint32) {
	for f := range 2 {
		base := (s.reserved + f*s.fatSectors) * 512
		if s.fat32 {
			binary.LittleEndian.PutUint32(s.img[base+int(c)*4:], v)
			continue
		}
		off := base + int(c) + int(c)/2
		old := binary.LittleEndian.Uint16(s.img[off:])
		var nv uint16
		if c&1 == 1 {
			nv = old&0x000F | uint16(v&0xFFF)<<4
		} else {
			nv = old&0xF000 | uint16(v&0xFFF)
		}
		binary.LittleEndian.PutUint16(s.img[off:], nv)
	}
}

func shortEntry(raw string, attr, nt byte, first, size uint32) []byte {
	e := make([]byte, 32)
	copy(e, raw)
	le := binary.LittleEndian
	e[11] = attr
	e[12] = nt
	e[13] = 150 // 1.5 s: the create time is 2021-06-15 12:34:57.5
	le.PutUint16(e[14:], fatClock(synthTime))
	le.PutUint16(e[16:], fatDate(synthTime))
	le.PutUint16(e[18:], fatDate(synthTime))
	le.PutUint16(e[20:], uint16(first>>16))
	le.PutUint16(e[22:], fatClock(synthTime))
	le.PutUint16(e[24:], fatDate(synthTime))
	le.PutUint16(e[26:], uint16(first))
	le.PutUint32(e[28:], size)
	return e
}

// lfnEntries encodes name as long-name entries in on-disk order (last part first).
func lfnEntries(name string, sum byte) [][]byte {
	u := utf16.Encode([]rune(name))
	n := (len(u) + 12) / 13
	padded := make([]uint16, n*13)
	for i := range padded {
		switch {
		case i < len(u):
			padded[i] = u[i]
		case i == len(u):
			padded[i] = 0
		default:
			padded[i] = 0xFFFF
		}
	}
	var out [][]byte
	for ord := n; ord >= 1; ord-- {
		e := make([]byte, 32)
		e[0] = byte(ord)
		if ord == n {
			e[0] |= 0x40
		}
		e[11] = attrLongName
		e[13] = sum
		part := padded[(ord-1)*13:]
		le := binary.LittleEndian
		for i := range 5 {
			le.PutUint16(e[1+2*i:], part[i])
		}
		for i := range 6 {
			le.PutUint16(e[14+2*i:], part[5+i])
		}
		for i := range 2 {
			le.PutUint16(e[28+2*i:], part[11+i])
		}
		out = append(out, e)
	}
	return out
}

// pattern returns n deterministic bytes that differ by seed and position.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// synthTree is the standard content of synthetic images.
func synthTree() []*snode {
	return []*snode{
		{name: "hello.txt", data: []byte("hello, world\n")},
		{name: "empty", data: nil},
		{name: "A long file name with spaces.text", data: pattern(1, 1500)},
		{name: "émoji 😀 and 日本.txt", data: pattern(2, 700)},
		{name: "frag.bin", data: pattern(3, 5*512+17), fragment: true},
		{name: "exact.bin", data: pattern(4, 1024)},
		{name: "readme.txt", short: "README  TXT", nt: ntLowerBase | ntLowerExt, data: []byte("lower\n")},
		{name: "lower.TXT", short: "LOWER   TXT", nt: ntLowerBase, data: []byte("base lower\n")},
		{name: "UPPER.txt", short: "UPPER   TXT", nt: ntLowerExt, data: []byte("ext lower\n")},
		{name: "ro.txt", readOnly: true, data: []byte("read only\n")},
		{name: "sub", dir: true, children: []*snode{
			{name: "inner file.txt", data: pattern(5, 3000)},
			{name: "deeper", dir: true, children: []*snode{
				{name: "leaf.bin", data: pattern(6, 513)},
			}},
		}},
		{name: "emptydir", dir: true},
	}
}
