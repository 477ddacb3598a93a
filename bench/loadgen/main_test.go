package main

import (
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
		txnOps: 1, consistency: "l"}
	if err := o.validate(); err == nil {
		t.Fatal("3-digit key numbers accepted in 2-byte keys")
	}
	o = options{workload: "load", clients: 1, conns: 1, total: 500, keySize: 8, keySpaceSize: 1,
		txnOps: 1, consistency: "l"}
	if err := o.validate(); err != nil || !o.sequentialKeys || o.keySpaceSize != 500 {
		t.Fatalf("load mode: err %v, %+v", err, o)
	}
}
