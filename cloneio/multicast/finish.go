package multicast

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dimg-project/dimg/cloneio"
)

// finish ends a session: when every object arrived, the target is read
// back through cloneio's one read-back check, which recomputes the image
// digest from what the target holds; the result is the report for the
// sender (DONE). recvErr is what ended reception.
func (r *receiver) finish(ctx context.Context, recvErr error) *done {
	d := &done{id: r.link.id, written: uint64(r.res.BytesWritten)}
	fail := func(result uint8, msg string) *done {
		d.result, d.message = result, msg
		r.res.Result = [...]string{"", "ok", "mismatch", "incomplete", "error"}[result]
		r.res.Message = msg
		return d
	}
	if recvErr != nil {
		return fail(resultError, recvErr.Error())
	}
	if !r.asm.complete() {
		runs, total := r.asm.missingRuns()
		d.ranges, d.failed = runs, uint32(total)
		for _, sp := range runs {
			r.res.Missing = append(r.res.Missing, ChunkRange{First: int64(sp.first), Count: int64(sp.count)})
		}
		r.res.MissingCount = total
		msg := fmt.Sprintf("%d of %d objects never arrived", total, r.ann.objects)
		if err := r.target.Sync(); err != nil {
			msg += "; " + err.Error()
		}
		return fail(resultIncomplete, msg)
	}
	vstart := time.Now()
	type result struct {
		digest [32]byte
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		var res result
		res.err = r.w.Finish()
		if res.err == nil {
			res.digest, res.err = r.w.Verify(ctx, r.ann.digest, r.prog)
		}
		ch <- res
	}()
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	var res result
wait:
	for {
		select {
		case res = <-ch:
			break wait
		case <-t.C:
			r.sendStatus(rxVerifying, nil)
		}
	}
	r.res.Verify = time.Since(vstart)
	d.digest = res.digest
	var bad *cloneio.VerifyError
	switch {
	case res.err == nil:
		r.res.OK = true
		return fail(resultOK, "")
	case !errors.As(res.err, &bad):
		return fail(resultError, res.err.Error())
	}
	d.failed = uint32(bad.Count)
	for _, b := range bad.Bad {
		d.ranges = append(d.ranges, span{uint32(b.First), uint32(b.Count)})
	}
	r.res.Missing = bad.Bad
	r.res.MissingCount = bad.Count
	return fail(resultMismatch, fmt.Sprintf("%d chunks read back differ from the image", bad.Count))
}
