package imagefmt

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkChunkSize measures compression ratio and speed per chunk size
// on real data (DIMG_BENCH_DATA names a file, e.g. a tar of /usr): the
// evidence behind DefaultChunkSize in FORMAT.md.
//
//	DIMG_BENCH_DATA=/tmp/usr.tar go test -run ^$ -bench ChunkSize ./imagefmt
func BenchmarkChunkSize(b *testing.B) {
	path := os.Getenv("DIMG_BENCH_DATA")
	if path == "" {
		b.Skip("set DIMG_BENCH_DATA to a file of real data")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	for _, cs := range []int{64 << 10, 128 << 10, 256 << 10, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("%dK", cs>>10), func(b *testing.B) {
			var e Encoder
			buf := make([]byte, FrameBufSize(cs))
			out := make([]byte, cs)
			var stored int64
			var dec time.Duration
			b.SetBytes(int64(len(data)))
			for range b.N {
				stored = 0
				for off := 0; off+cs <= len(data); off += cs {
					f, err := e.Encode(buf, int64(off/cs), data[off:off+cs])
					if err != nil {
						b.Fatal(err)
					}
					stored += int64(len(f.Raw))
					t0 := time.Now()
					if _, err := f.Decode(out); err != nil {
						b.Fatal(err)
					}
					dec += time.Since(t0)
				}
			}
			b.ReportMetric(float64(len(data)/cs*cs)/float64(stored), "ratio")
			b.ReportMetric(float64(len(data))*float64(b.N)/dec.Seconds()/1e6, "decodeMB/s")
		})
	}
}
