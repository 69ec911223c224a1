package ntfs

import (
	"fmt"
	"sort"
)

// run maps length clusters from vcn onwards to lcn; lcn < 0 is sparse.
type run struct {
	vcn, lcn, length int64
}

// decodeRuns decodes a mapping-pairs array covering VCNs startVCN..lastVCN.
// Each pair is a header byte (low nibble: bytes of length, high nibble:
// bytes of the signed LCN delta, 0 = sparse), then the two numbers.
func decodeRuns(b []byte, startVCN, lastVCN int64) ([]run, error) {
	var runs []run
	vcn, lcn := startVCN, int64(0)
	for i := 0; i < len(b) && b[i] != 0; {
		h := b[i]
		lenBytes, offBytes := int(h&0x0f), int(h>>4)
		i++
		if lenBytes == 0 || lenBytes > 8 || offBytes > 8 || i+lenBytes+offBytes > len(b) {
			return nil, fmt.Errorf("runlist header %#02x at %d overruns the attribute", h, i-1)
		}
		length := int64(leUint(b[i : i+lenBytes]))
		i += lenBytes
		if length <= 0 || length > lastVCN+1-vcn {
			return nil, fmt.Errorf("run of %d clusters at VCN %d exceeds the last VCN %d", length, vcn, lastVCN)
		}
		r := run{vcn: vcn, lcn: -1, length: length}
		if offBytes > 0 {
			lcn += leInt(b[i : i+offBytes])
			i += offBytes
			if lcn < 0 {
				return nil, fmt.Errorf("run at VCN %d points to negative LCN %d", vcn, lcn)
			}
			r.lcn = lcn
		}
		runs = append(runs, r)
		vcn += length
	}
	return runs, nil
}

func leUint(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// leInt is a sign-extended little-endian integer of 1-8 bytes.
func leInt(b []byte) int64 {
	v := leUint(b)
	shift := 64 - 8*uint(len(b))
	return int64(v<<shift) >> shift
}

// findRun returns the index of the run holding vcn, or -1.
func findRun(runs []run, vcn int64) int {
	i := sort.Search(len(runs), func(i int) bool { return runs[i].vcn+runs[i].length > vcn })
	if i < len(runs) && runs[i].vcn <= vcn {
		return i
	}
	return -1
}
