package main

import (
	"errors"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestMakeKeyPadsToSize(t *testing.T) {
	if got := makeKey(42, 8); got != "00000042" {
		t.Fatalf("makeKey(42, 8) = %q", got)
	}
	if got := makeKey(123456789, 8); got != "123456789" {
		t.Fatalf("makeKey overflow = %q", got)
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(s[:1], 99); got != time.Millisecond {
		t.Errorf("p99 of one sample = %v", got)
	}
}

func TestSummarizeRate(t *testing.T) {
	lat := []time.Duration{3 * time.Millisecond, 1 * time.Millisecond, 2 * time.Millisecond}
	r := summarize(lat, 2*time.Second)
	if r.RequestsPS != 1.5 || r.AvgMs != 2 || r.P50Ms != 2 || r.MaxMs != 3 {
		t.Fatalf("summarize = %+v", r)
	}
}

func TestValidateRejectsKeysTooSmall(t *testing.T) {
	o := options{workload: "put", clients: 1, conns: 1, total: 1, keySize: 2, keySpaceSize: 1000,
		txnOps: 1, rangeKeys: 1, consistency: "l"}
	if err := o.validate(); err == nil {
		t.Fatal("3-digit key numbers accepted in 2-byte keys")
	}
	o = options{workload: "load", clients: 1, conns: 1, total: 500, keySize: 8, keySpaceSize: 1,
		txnOps: 1, rangeKeys: 1, consistency: "l"}
	if err := o.validate(); err != nil || !o.sequentialKeys || o.keySpaceSize != 500 {
		t.Fatalf("load mode: err %v, %+v", err, o)
	}
}

func TestFanoutTrackerCompletesWhenEveryWatcherSawAPut(t *testing.T) {
	tr := newFanoutTracker(3, 2)
	if !tr.deliver(0, 100) || !tr.deliver(1, 150) {
		t.Fatal("known puts rejected")
	}
	if tr.deliver(3, 1) || tr.deliver(-1, 1) {
		t.Fatal("a put number outside [0, puts) was accepted")
	}
	if tr.complete.Load() != 0 {
		t.Fatalf("complete %d after one watcher each", tr.complete.Load())
	}
	tr.deliver(0, 130) // the second watcher of put 0, later: the latest delivery counts
	tr.deliver(1, 120) // the second watcher of put 1, earlier: 150 stays
	if tr.complete.Load() != 2 {
		t.Fatalf("complete %d, want 2", tr.complete.Load())
	}
	got := tr.lastDelays([]int64{90, 100, 110}, 3)
	if len(got) != 2 || got[0] != 40 || got[1] != 50 {
		t.Fatalf("lastDelays = %v, want [40ns 50ns] (put 2 never complete)", got)
	}
}

func TestWaitLagBlocksUntilDeliveryThenTimesOut(t *testing.T) {
	tr := newFanoutTracker(4, 1)
	if !waitLag(tr, 1, 2, time.Millisecond) {
		t.Fatal("put 1 with max-lag 2 and nothing outstanding beyond 1 must go")
	}
	if waitLag(tr, 2, 2, 20*time.Millisecond) {
		t.Fatal("put 2 with puts 0 and 1 undelivered and max-lag 2 must wait")
	}
	go func() { time.Sleep(5 * time.Millisecond); tr.deliver(0, 1) }()
	if !waitLag(tr, 2, 2, 5*time.Second) {
		t.Fatal("delivery of put 0 did not release put 2")
	}
}

func TestLeasesOfStreamPartitionsAllLeases(t *testing.T) {
	seen := map[int]bool{}
	for s := range 7 {
		for _, i := range leasesOfStream(s, 7, 100) {
			if seen[i] {
				t.Fatalf("lease %d in two streams", i)
			}
			seen[i] = true
		}
	}
	if len(seen) != 100 {
		t.Fatalf("%d of 100 leases assigned", len(seen))
	}
	if got := leasesOfStream(5, 10, 3); len(got) != 0 {
		t.Fatalf("stream 5 of 10 with 3 leases got %v", got)
	}
}

func TestForEachParallelRunsEveryIndexOnceAndCountsErrors(t *testing.T) {
	var mu sync.Mutex
	count := map[int]int{}
	n, err := forEachParallel(1000, 8, func(_, i int) error {
		mu.Lock()
		count[i]++
		mu.Unlock()
		if i%100 == 0 {
			return errors.New("boom")
		}
		return nil
	})
	if n != 10 || err == nil {
		t.Fatalf("errors %d (%v), want 10", n, err)
	}
	for i := range 1000 {
		if count[i] != 1 {
			t.Fatalf("index %d ran %d times", i, count[i])
		}
	}
}

func TestValidateNewWorkloads(t *testing.T) {
	base := options{clients: 1, conns: 1, total: 1, keySize: 8, keySpaceSize: 1, txnOps: 1,
		rangeKeys: 1, consistency: "l", streams: 100, watchersPerStream: 100, leases: 10, leaseTTL: time.Minute}
	o := base
	o.workload = "watch-idle"
	if err := o.validate(); err != nil || o.keySpaceSize != 10000 {
		t.Fatalf("watch-idle: err %v, key space %d", err, o.keySpaceSize)
	}
	o = base
	o.workload, o.keySize = "watch-idle", 3
	if err := o.validate(); err == nil {
		t.Fatal("10,000 distinct watch keys accepted in 3-byte keys")
	}
	o = base
	o.workload, o.valSize = "watch", 8
	if err := o.validate(); err != nil || o.valSize != 16 {
		t.Fatalf("watch: err %v, val size %d", err, o.valSize)
	}
	o = base
	o.workload, o.leaseTTL = "lease-keepalive", 0
	if err := o.validate(); err == nil {
		t.Fatal("lease TTL 0 accepted")
	}
}

func TestValidateRangeKeysWithinTheKeySpace(t *testing.T) {
	o := options{workload: "range", clients: 1, conns: 1, total: 1, keySize: 8,
		keySpaceSize: 1000, txnOps: 1, rangeKeys: 100, consistency: "l"}
	if err := o.validate(); err != nil {
		t.Fatalf("100 keys of 1,000: %v", err)
	}
	for _, n := range []int{0, 1001} {
		o.rangeKeys = n
		if err := o.validate(); err == nil {
			t.Fatalf("--range-keys %d of 1,000 keys accepted", n)
		}
	}
}

func TestKeySpaceEndIsAfterEveryKey(t *testing.T) {
	if got := keySpaceEnd(10000, 8); got != "00010000" {
		t.Fatalf("keySpaceEnd(10000, 8) = %q", got)
	}
	if got := keySpaceEnd(1000, 3); got != "999\x00" || got <= makeKey(999, 3) {
		t.Fatalf("keySpaceEnd(1000, 3) = %q", got)
	}
}

func TestOwnKeysPartitionTheKeySpace(t *testing.T) {
	const clients, space = 7, 30
	owner := map[int]int{}
	for w := range clients {
		rng := mrand.New(mrand.NewPCG(uint64(w), 1))
		for range 2000 {
			k := ownKey(w, clients, space, rng)
			if k < 0 || k >= space || k%clients != w {
				t.Fatalf("goroutine %d drew key %d", w, k)
			}
			owner[k] = w
		}
	}
	if len(owner) != space {
		t.Fatalf("%d of %d keys drawn", len(owner), space)
	}
}
