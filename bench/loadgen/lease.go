package main

// Lease keep-alive (lease-keepalive): grant --leases leases (TTL --lease-ttl) with --clients
// goroutines over --conns connections, timed apart; then --streams LeaseKeepAlive streams
// (spread over the connections) each cycle through their share of the leases (stream s owns
// leases s, s+S, s+2S, ...), one request in flight per stream: send the lease's ID, wait for
// its answer, go on with the next lease. The timed phase stops after --total keep-alives or
// --duration. requests_per_s is keep-alive answers per second; the latency is one
// keep-alive's round trip. An answer with TTL <= 0 (lease not found) counts as an error.
// Afterwards, untimed, the leases are revoked so that they do not weigh on later workloads
// (--revoke=false keeps them until they expire).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leasesOfStream returns the indexes of the leases that stream s of streams cycles through.
func leasesOfStream(s, streams, leases int) []int {
	var out []int
	for i := s; i < leases; i += streams {
		out = append(out, i)
	}
	return out
}

// forEachParallel runs fn(i) for i in [0, n) on workers goroutines; it returns the number of
// errors and the first one.
func forEachParallel(n, workers int, fn func(w, i int) error) (int, error) {
	var next, nerr atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(w, i); err != nil && nerr.Add(1) == 1 {
					first.Store(err)
				}
			}
		}()
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return int(nerr.Load()), err
}

func runLeaseKeepAlive(o options) (*Result, error) {
	clis, err := newClients(o)
	if err != nil {
		return nil, err
	}
	defer closeAll(clis)
	ids := make([]clientv3.LeaseID, o.leases)
	t0 := time.Now()
	nerr, err := forEachParallel(o.leases, o.clients, func(w, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
		defer cancel()
		resp, err := clis[w%len(clis)].Grant(ctx, int64(o.leaseTTL/time.Second))
		if err == nil {
			ids[i] = resp.ID
		}
		return err
	})
	grant := time.Since(t0)
	if nerr > 0 {
		return nil, fmt.Errorf("%d of %d grants failed, first: %w", nerr, o.leases, err)
	}
	res, err := keepAliveStreams(o, clis, ids)
	if err != nil {
		return nil, err
	}
	res.Leases = o.leases
	res.GrantSeconds = grant.Seconds()
	res.GrantsPS = float64(o.leases) / grant.Seconds()
	if o.revoke {
		t1 := time.Now()
		nrev, err := forEachParallel(o.leases, o.clients, func(w, i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
			defer cancel()
			_, err := clis[w%len(clis)].Revoke(ctx, ids[i])
			return err
		})
		res.RevokeSeconds = time.Since(t1).Seconds()
		if nrev > 0 {
			res.RevokeErrors = nrev
			res.FirstError = fmt.Sprintf("revoke: %v", err)
		}
	}
	return res, nil
}

func keepAliveStreams(o options, clis []*clientv3.Client, ids []clientv3.LeaseID) (*Result,
	error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := make([]pb.Lease_LeaseKeepAliveClient, o.streams)
	for s := range streams {
		st, err := pb.NewLeaseClient(clis[s%len(clis)].ActiveConnection()).LeaseKeepAlive(ctx)
		if err != nil {
			return nil, fmt.Errorf("open keep-alive stream %d: %w", s, err)
		}
		streams[s] = st
	}
	var issued, nerr atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, o.streams)
	var wg sync.WaitGroup
	start := time.Now()
	for s, st := range streams {
		mine := leasesOfStream(s, o.streams, len(ids))
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]time.Duration, 0, o.total/o.streams+1)
			defer func() { lat[s] = out }()
			for j := 0; ; j++ {
				if int(issued.Add(1)) > o.total ||
					(o.duration > 0 && time.Since(start) >= o.duration) {
					return
				}
				id := ids[mine[j%len(mine)]]
				t0 := time.Now()
				err := st.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)})
				var resp *pb.LeaseKeepAliveResponse
				if err == nil {
					resp, err = st.Recv()
				}
				if err == nil && resp.TTL <= 0 {
					err = fmt.Errorf("lease %x: keep-alive answered TTL %d", id, resp.TTL)
				}
				if err == nil && resp.ID != int64(id) {
					err = fmt.Errorf("keep-alive for %x answered for %x", id, resp.ID)
				}
				out = append(out, time.Since(t0))
				if err != nil {
					if nerr.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					if errors.Is(err, context.Canceled) || resp == nil {
						return // the stream is broken
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, st := range streams {
		_ = st.CloseSend()
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	res := summarize(all, elapsed)
	res.Workload, res.Total, res.Errors = "lease-keepalive", len(all), int(nerr.Load())
	res.Streams = o.streams
	if s, ok := firstErr.Load().(string); ok {
		res.FirstError = s
	}
	return res, nil
}
