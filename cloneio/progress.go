package cloneio

// Progress receives counts of disk bytes processed. Implementations must
// be safe for concurrent use.
type Progress interface {
	// Start announces the total number of bytes the operation will report.
	Start(total int64)
	Add(n int64)
}

type noProgress struct{}

func (noProgress) Start(int64) {}
func (noProgress) Add(int64)   {}

func orNoProgress(p Progress) Progress {
	if p == nil {
		return noProgress{}
	}
	return p
}
