package cloneio

import (
	"errors"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

const mb = int64(1) << 20

// layoutShrinker is a Shrinker with measured partitions and no disk: what
// Layout needs.
func layoutShrinker(grow bool, parts ...ShrinkPart) *Shrinker {
	for i := range parts {
		p := &parts[i]
		if p.MinSize == 0 {
			p.MinSize = p.OldSize
		}
		p.scale = p.MinSize < p.OldSize && !p.pinned
	}
	return &Shrinker{
		opt: ShrinkOptions{Grow: grow}, ss: 512, parts: parts, first: parts[0].OldStart, backup: 33 * 512,
		size: 10 << 30, disk: &disk.Disk{Table: &parttable.Table{Kind: parttable.KindGPT}},
	}
}

func TestShrinkLayoutProportional(t *testing.T) {
	s := layoutShrinker(false,
		ShrinkPart{Number: 1, OldStart: mb, OldSize: 256 * mb, MinSize: 40 * mb},
		ShrinkPart{Number: 2, OldStart: 257 * mb, OldSize: 7000 * mb, MinSize: 1500 * mb},
		ShrinkPart{Number: 3, OldStart: 7257 * mb, OldSize: 512 * mb, MinSize: 1 * mb},
	)
	min := s.MinimumBytes()
	if want := (1 + 40 + 1500 + 1 + 1) * mb; min != want {
		t.Errorf("minimum %d MiB, want %d MiB", min/mb, want/mb)
	}
	plan, err := s.Layout(3 << 30)
	if err != nil {
		t.Fatal(err)
	}
	end := int64(0)
	for i, p := range plan.Partitions {
		if p.NewSize < p.MinSize || p.NewSize > p.OldSize || p.NewStart%mb != 0 || p.NewSize%mb != 0 {
			t.Errorf("partition %d: %+v", p.Number, p)
		}
		if i > 0 && p.NewStart < end {
			t.Errorf("partition %d overlaps the one before", p.Number)
		}
		end = p.NewStart + p.NewSize
	}
	if end > 3<<30-33*512 || end < 3<<30-2*mb {
		t.Errorf("the partitions end at %d of %d", end, int64(3<<30))
	}
	// In proportion: the ESP keeps about the share the root keeps.
	r1 := float64(plan.Partitions[0].NewSize) / float64(plan.Partitions[0].OldSize)
	r2 := float64(plan.Partitions[1].NewSize) / float64(plan.Partitions[1].OldSize)
	if r1 < r2*0.9 || r1 > r2*1.1 {
		t.Errorf("shares %.3f and %.3f are not in proportion", r1, r2)
	}
	if plan.Partitions[0].NewStart != mb {
		t.Error("the first partition moved")
	}
	var tooSmall *TooSmallError
	if _, err := s.Layout(min - mb); !errors.As(err, &tooSmall) || tooSmall.Minimum != min || !errors.Is(err, ErrTooSmall) {
		t.Errorf("1 MiB under the minimum: %v", err)
	}
	if _, err := s.Layout(min); err != nil {
		t.Errorf("at the minimum: %v", err)
	}
}

func TestShrinkLayoutGrowAndPinned(t *testing.T) {
	s := layoutShrinker(true,
		ShrinkPart{Number: 1, OldStart: mb, OldSize: mb, pinned: true, Fixed: "BIOS boot"},
		ShrinkPart{Number: 2, OldStart: 2 * mb, OldSize: 500 * mb, MinSize: 100 * mb},
		ShrinkPart{Number: 3, OldStart: 502 * mb, OldSize: 4000 * mb, MinSize: 1000 * mb},
	)
	plan, err := s.Layout(2000 * mb)
	if err != nil {
		t.Fatal(err)
	}
	p := plan.Partitions
	if p[0].NewStart != mb || p[0].NewSize != mb || p[1].NewSize != 500*mb {
		t.Errorf("--grow: the pinned or earlier partitions changed: %+v", p[:2])
	}
	if end := p[2].NewStart + p[2].NewSize; end < 1998*mb {
		t.Errorf("--grow: the last partition ends at %d MiB", end/mb)
	}
}

func TestShrinkLayoutLogical(t *testing.T) {
	s := layoutShrinker(false,
		ShrinkPart{Number: 1, OldStart: mb, OldSize: 100 * mb, MinSize: 20 * mb},
		ShrinkPart{Number: 2, OldStart: 101 * mb, OldSize: 300 * mb, Extended: true},
		ShrinkPart{Number: 5, OldStart: 102 * mb, OldSize: 149 * mb, MinSize: 10 * mb, Logical: true, ebrGap: mb},
		ShrinkPart{Number: 6, OldStart: 252 * mb, OldSize: 149 * mb, MinSize: 10 * mb, Logical: true, ebrGap: mb},
	)
	s.disk.Table.Kind = parttable.KindMBR
	s.backup = 0
	plan, err := s.Layout(200 * mb)
	if err != nil {
		t.Fatal(err)
	}
	p := plan.Partitions
	if ext, l5, l6 := p[1], p[2], p[3]; ext.NewStart != l5.NewStart-mb || ext.NewStart+ext.NewSize != l6.NewStart+l6.NewSize ||
		l6.NewStart-mb < l5.NewStart+l5.NewSize || l6.NewStart+l6.NewSize > 200*mb {
		t.Errorf("logical layout: %+v", p)
	}
}
