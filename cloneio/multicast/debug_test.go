package multicast

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

func TestDebugPace(t *testing.T) {
	fx := newFixture(t, 24<<20, 256<<10, 4)
	ctx := context.Background()
	grp, port := loopEndpoint()
	_, outs := startReceivers(ctx, t, 1, grp, port, ReceiveOptions{Wait: 20 * time.Second})
	lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	res, err := Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MaxRate: 4 << 20, Logger: lg})
	t.Logf("%v pass %s total %s packets %d bytes %d", err, res.PassDuration, res.Duration, res.Packets, res.Bytes)
	<-outs[0]
}
