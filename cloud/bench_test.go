package cloud_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
)

// BenchmarkCreate measures brine's own overhead from create to converged: dosim with zero boot
// delay, a master that enrols and converges at once, no request pacing, 10 ms status polls.
func BenchmarkCreate(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("droplets=%d", n), func(b *testing.B) {
			e := newEnv(b, dosim.Options{DropletLimit: 1 << 30, PerMinute: -1, PerHour: -1},
				func(o *cloud.ClientOptions) { o.PollInterval = 10 * time.Millisecond })
			p := mustConfig(b, testConfig).Profiles["app"]
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				names := make([]string, n)
				for j := range names {
					names[j] = fmt.Sprintf("b%d-%d", i, j)
				}
				res, err := e.c.Create(ctx, cloud.CreateRequest{Profile: p, Names: names, Master: e.master})
				if err != nil {
					b.Fatal(err)
				}
				if _, conv := res.Counts(); conv != n {
					b.Fatalf("%d converged", conv)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(e.sim.Requests("", "/v2/"))/float64(b.N), "requests/op")
		})
	}
}
