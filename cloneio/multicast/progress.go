package multicast

// Progress receives periodic updates (a few per second) from Send and
// Receive. Implementations must return quickly.
type Progress interface {
	Update(Stats)
}

// Stats is a snapshot of a transfer.
type Stats struct {
	Phase     string  // "waiting", "sending", "repairing", "verifying", "done"
	Done      int64   // sender: pass bytes sent; receiver: logical bytes written or verified
	Total     int64   // the matching total
	Rate      float64 // bytes/s over the last interval (network bytes)
	Receivers int     // sender: receivers known
	Finished  int     // sender: receivers that reported DONE or were given up
	Repairs   int64   // sender: repair packets sent; receiver: symbols requested
	LossPct   float64 // sender: worst recent loss reported; receiver: own recent loss
}

type noProgress struct{}

func (noProgress) Update(Stats) {}
