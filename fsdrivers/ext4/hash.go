package ext4

import "math/bits"

// Directory hash versions (dx_root_info.hash_version). The *Unsigned
// variants treat name bytes as unsigned char; the on-disk version is one of
// the first three and the superblock's s_flags says which char signedness
// the filesystem was created with.
const (
	hashLegacy          = 0
	hashHalfMD4         = 1
	hashTea             = 2
	hashLegacyUnsigned  = 3
	hashHalfMD4Unsigned = 4
	hashTeaUnsigned     = 5
	hashSiphash         = 6
)

// dirHash computes the htree hash of name (major hash, low bit clear). ok is
// false for versions we do not implement (siphash, used only by casefolded
// encrypted directories).
func dirHash(name []byte, version uint8, seed [4]uint32) (hash uint32, ok bool) {
	buf := [4]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}
	if seed != [4]uint32{} {
		buf = seed
	}
	unsigned := false
	switch version {
	case hashLegacyUnsigned:
		unsigned = true
		fallthrough
	case hashLegacy:
		hash = legacyHash(name, unsigned)
	case hashHalfMD4Unsigned:
		unsigned = true
		fallthrough
	case hashHalfMD4:
		var in [8]uint32
		for p := name; len(p) > 0; p = p[min(32, len(p)):] {
			strToHashBuf(p, in[:], unsigned)
			halfMD4(&buf, &in)
		}
		hash = buf[1]
	case hashTeaUnsigned:
		unsigned = true
		fallthrough
	case hashTea:
		var in [4]uint32
		for p := name; len(p) > 0; p = p[min(16, len(p)):] {
			strToHashBuf(p, in[:], unsigned)
			tea(&buf, &in)
		}
		hash = buf[0]
	default:
		return 0, false
	}
	hash &^= 1
	if hash == 0x7fffffff<<1 { // reserved end-of-directory marker
		hash = (0x7fffffff - 1) << 1
	}
	return hash, true
}

// char widens a name byte as C's char would: sign-extended unless unsigned.
func char(b byte, unsigned bool) uint32 {
	if unsigned {
		return uint32(b)
	}
	return uint32(int32(int8(b)))
}

// legacyHash is the original ext3 htree hash ("dx_hack_hash").
func legacyHash(name []byte, unsigned bool) uint32 {
	h0, h1 := uint32(0x12a3fe2d), uint32(0x37abe8f9)
	for _, b := range name {
		h := h1 + (h0 ^ char(b, unsigned)*7152373)
		if h&0x80000000 != 0 {
			h -= 0x7fffffff
		}
		h1, h0 = h0, h
	}
	return h0 << 1
}

// strToHashBuf packs up to 4*len(out) name bytes into out, big-endian
// within each word, padding with a word derived from the length.
func strToHashBuf(msg []byte, out []uint32, unsigned bool) {
	n := uint32(len(msg))
	pad := n | n<<8
	pad |= pad << 16
	val := pad
	msg = msg[:min(len(msg), 4*len(out))]
	k := 0
	for i, b := range msg {
		val = char(b, unsigned) + val<<8
		if i%4 == 3 {
			out[k] = val
			k++
			val = pad
		}
	}
	if k < len(out) {
		out[k] = val
		k++
	}
	for ; k < len(out); k++ {
		out[k] = pad
	}
}

// halfMD4 is the reduced MD4 transform used by the half_md4 hash.
func halfMD4(buf *[4]uint32, in *[8]uint32) {
	a, b, c, d := buf[0], buf[1], buf[2], buf[3]
	f := func(x, y, z uint32) uint32 { return z ^ (x & (y ^ z)) }
	g := func(x, y, z uint32) uint32 { return (x & y) + ((x ^ y) & z) }
	h := func(x, y, z uint32) uint32 { return x ^ y ^ z }
	const k2, k3 = 0x5A827999, 0x6ED9EBA1
	round := func(fn func(x, y, z uint32) uint32, a *uint32, b, c, d, x uint32, s int) {
		*a = bits.RotateLeft32(*a+fn(b, c, d)+x, s)
	}
	round(f, &a, b, c, d, in[0], 3)
	round(f, &d, a, b, c, in[1], 7)
	round(f, &c, d, a, b, in[2], 11)
	round(f, &b, c, d, a, in[3], 19)
	round(f, &a, b, c, d, in[4], 3)
	round(f, &d, a, b, c, in[5], 7)
	round(f, &c, d, a, b, in[6], 11)
	round(f, &b, c, d, a, in[7], 19)

	round(g, &a, b, c, d, in[1]+k2, 3)
	round(g, &d, a, b, c, in[3]+k2, 5)
	round(g, &c, d, a, b, in[5]+k2, 9)
	round(g, &b, c, d, a, in[7]+k2, 13)
	round(g, &a, b, c, d, in[0]+k2, 3)
	round(g, &d, a, b, c, in[2]+k2, 5)
	round(g, &c, d, a, b, in[4]+k2, 9)
	round(g, &b, c, d, a, in[6]+k2, 13)

	round(h, &a, b, c, d, in[3]+k3, 3)
	round(h, &d, a, b, c, in[7]+k3, 9)
	round(h, &c, d, a, b, in[2]+k3, 11)
	round(h, &b, c, d, a, in[6]+k3, 15)
	round(h, &a, b, c, d, in[1]+k3, 3)
	round(h, &d, a, b, c, in[5]+k3, 9)
	round(h, &c, d, a, b, in[0]+k3, 11)
	round(h, &b, c, d, a, in[4]+k3, 15)

	buf[0] += a
	buf[1] += b
	buf[2] += c
	buf[3] += d
}

// tea is 16 rounds of the TEA cipher over the first two buffer words.
func tea(buf *[4]uint32, in *[4]uint32) {
	var sum uint32
	b0, b1 := buf[0], buf[1]
	a, b, c, d := in[0], in[1], in[2], in[3]
	for range 16 {
		sum += 0x9E3779B9
		b0 += ((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >> 5) + b)
		b1 += ((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >> 5) + d)
	}
	buf[0] += b0
	buf[1] += b1
}
