package cloneio

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/fsdrivers/swap"
)

// fakeDriver opens every disk as a volume with the capabilities given.
type fakeDriver struct{ vol fsdrivers.Volume }

func (fakeDriver) Name() string { return "fake" }
func (d fakeDriver) Open(io.ReaderAt, int64) (fsdrivers.Volume, error) {
	if d.vol == nil {
		return nil, fmt.Errorf("fake: %w", fsdrivers.ErrNotFound)
	}
	return d.vol, nil
}

type fakeVol struct{}

func (fakeVol) Type() string  { return "fakefs" }
func (fakeVol) UUID() string  { return "" }
func (fakeVol) Label() string { return "" }

// usedVol lists its used bytes and a problem it worked around.
type usedVol struct{ fakeVol }

func (usedVol) UsedRanges() ([]fsdrivers.Range, error) {
	return []fsdrivers.Range{{Off: 4096, Len: 8192}, {Off: 1 << 20, Len: 1 << 30}}, nil
}
func (usedVol) Warnings() []string { return []string{"group 3 copied whole"} }

// TestPlanCapabilities: what is copied of a bare disk follows the volume's
// capabilities (typed, not its type name): swap's header only, a used-range
// map clipped to the partition with its warnings recorded, or everything.
func TestPlanCapabilities(t *testing.T) {
	const size = 4 << 20
	swapDisk := make([]byte, size)
	copy(swapDisk[4096-10:], "SWAPSPACE2")
	binary.LittleEndian.PutUint32(swapDisk[1024:], 1)

	for _, c := range []struct {
		name     string
		disk     []byte
		driver   fsdrivers.Driver
		copyMode string
		used     []Range
		warning  string
	}{
		{"swap", swapDisk, swap.Driver{}, "header", []Range{{0, 4096}}, ""},
		{"used ranges", make([]byte, size), fakeDriver{usedVol{}}, "used",
			[]Range{{4096, 8192}, {1 << 20, size - 1<<20}}, "(fakefs): group 3 copied whole"},
		{"no used ranges", make([]byte, size), fakeDriver{fakeVol{}}, "sector",
			[]Range{{0, size}}, "(fakefs): cannot list used blocks"},
		{"nothing recognised", make([]byte, size), fakeDriver{}, "sector",
			[]Range{{0, size}}, "no filesystem recognised"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := MakePlan(bytes.NewReader(c.disk), size, 512, []fsdrivers.Driver{c.driver}, PlanOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Info.Partitions) != 1 {
				t.Fatalf("partitions %+v", p.Info.Partitions)
			}
			pi := p.Info.Partitions[0]
			if pi.Copy != c.copyMode || !slices.Equal(p.Used, c.used) {
				t.Errorf("copy %q used %v; want %q %v", pi.Copy, p.Used, c.copyMode, c.used)
			}
			warns := strings.Join(p.Info.Warnings, "\n")
			if c.warning == "" && warns != "" || !strings.Contains(warns, c.warning) {
				t.Errorf("warnings %q, want one with %q", warns, c.warning)
			}
		})
	}
}

// TestPartitionInfoKeepsTheTableEntry: the image's partition record
// carries every field of parttable.Partition under the same JSON key, so
// `dimg info --json` and `dimg ls --json` describe a partition alike. A
// field added to one side and not the other fails here.
func TestPartitionInfoKeepsTheTableEntry(t *testing.T) {
	var p parttable.Partition
	v := reflect.ValueOf(&p).Elem()
	for i := range v.NumField() { // every field non-zero, each one different
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString(fmt.Sprintf("value %d", i))
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(1000 + i))
		case reflect.Bool:
			f.SetBool(true)
		default:
			t.Fatalf("parttable.Partition.%s: kind %s not covered by this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	asMap := func(x any) map[string]any {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	want := asMap(p)
	got := asMap(partitionInfo(&disk.Part{Partition: p, Volume: fakeVol{}}))
	for k, w := range want {
		if got[k] != w {
			t.Errorf("key %q: %v in the image's record, %v in the table's entry", k, got[k], w)
		}
	}
	if got["fs"] != "fakefs" {
		t.Errorf("fs = %v, want the volume's type", got["fs"])
	}
}
