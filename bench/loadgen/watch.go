package main

// Watch fan-out: --streams gRPC watch streams with --watchers-per-stream watchers each, all
// on one key, and one writer. Every value carries its send time (bytes 0..7) and the number
// of its put (bytes 8..15), so each delivery is attributed to its put on the writer's clock:
//
//	per-event delay      delivery time - send time, one sample per (watcher, put)
//	put-to-last-delivery the latest delivery of a put among all watchers - its send time,
//	                     one sample per put that reached every watcher
//
// With --max-lag N the writer never runs more than N puts ahead of the last put that every
// watcher has seen (0: no limit, the writer puts back to back). Without a limit a slow
// server accumulates an unbounded backlog and the delay measures the backlog, not the
// server; with a small limit events/s is what the server sustains.

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// fanoutTracker counts the deliveries of every put and the time of its latest one.
type fanoutTracker struct {
	watchers int
	count    []atomic.Int32
	last     []atomic.Int64 // UnixNano of the latest delivery of put i
	complete atomic.Int64   // puts delivered to every watcher
	notify   chan struct{}  // a put became complete (capacity 1, never blocks)
}

func newFanoutTracker(puts, watchers int) *fanoutTracker {
	return &fanoutTracker{
		watchers: watchers,
		count:    make([]atomic.Int32, puts),
		last:     make([]atomic.Int64, puts),
		notify:   make(chan struct{}, 1),
	}
}

// deliver records that one watcher received put i at time nowNs. It reports false for a
// put number the tracker does not know (a foreign writer on the key).
func (t *fanoutTracker) deliver(i int, nowNs int64) bool {
	if i < 0 || i >= len(t.count) {
		return false
	}
	for {
		prev := t.last[i].Load()
		if prev >= nowNs || t.last[i].CompareAndSwap(prev, nowNs) {
			break
		}
	}
	if int(t.count[i].Add(1)) == t.watchers {
		t.complete.Add(1)
		select {
		case t.notify <- struct{}{}:
		default:
		}
	}
	return true
}

// lastDelays returns, for every put in [0, puts) that reached every watcher, its latest
// delivery time minus its send time.
func (t *fanoutTracker) lastDelays(sentNs []int64, puts int) []time.Duration {
	out := make([]time.Duration, 0, puts)
	for i := range puts {
		if int(t.count[i].Load()) == t.watchers {
			out = append(out, time.Duration(t.last[i].Load()-sentNs[i]))
		}
	}
	return out
}

// openWatchers opens streams x perStream watchers, the streams in parallel (a clientv3
// stream creates its watchers one at a time), and returns their channels in index order.
// keyOf gives watcher idx's key; ctx ends them all.
func openWatchers(ctx context.Context, clis []*clientv3.Client, streams, perStream int,
	keyOf func(idx int) string) ([]clientv3.WatchChan, error) {
	chans := make([]clientv3.WatchChan, streams*perStream)
	errs := make(chan error, streams)
	var wg sync.WaitGroup
	for s := range streams {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			cli := clis[s%len(clis)]
			// clientv3 multiplexes watchers with equal metadata onto one gRPC stream; a
			// distinct metadata value per stream gives each its own.
			sctx := metadata.AppendToOutgoingContext(ctx, "loadgen-stream", strconv.Itoa(s))
			for m := range perStream {
				idx := s*perStream + m
				wch := cli.Watch(sctx, keyOf(idx), clientv3.WithCreatedNotify())
				first, ok := <-wch
				if !ok || !first.Created {
					errs <- fmt.Errorf("watcher %d was not created: %v", idx, first.Err())
					return
				}
				chans[idx] = wch
			}
		}(s)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return chans, nil
}

func runWatch(o options) (*Result, error) {
	clis, err := newClients(o)
	if err != nil {
		return nil, err
	}
	defer closeAll(clis)
	key := makeKey(0, o.keySize)
	nw := o.streams * o.watchersPerStream
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now()
	chans, err := openWatchers(ctx, clis, o.streams, o.watchersPerStream,
		func(int) string { return key })
	if err != nil {
		return nil, err
	}
	createSeconds := time.Since(t0).Seconds()
	tr := newFanoutTracker(o.total, nw)
	sentNs := make([]int64, o.total)
	delays := make([][]time.Duration, nw)
	var wg sync.WaitGroup
	var lastEvent atomic.Int64 // UnixNano of the latest delivery seen by any watcher
	for idx, wch := range chans {
		wg.Add(1)
		go func(idx int, wch clientv3.WatchChan) {
			defer wg.Done()
			mine := make([]time.Duration, 0, min(o.total, 1<<16))
			for resp := range wch {
				now := time.Now()
				for _, ev := range resp.Events {
					v := ev.Kv.Value
					if len(v) < 16 {
						continue
					}
					sent := int64(binary.BigEndian.Uint64(v[:8]))
					if tr.deliver(int(binary.BigEndian.Uint64(v[8:16])), now.UnixNano()) {
						mine = append(mine, now.Sub(time.Unix(0, sent)))
					}
				}
				lastEvent.Store(now.UnixNano())
			}
			delays[idx] = mine
		}(idx, wch)
	}
	value := randomBytes(o.valSize)
	// The writer has a connection of its own: on a watcher's connection its puts would
	// queue behind that connection's share of the fan-out.
	wo := o
	wo.conns = 1
	wcli, err := newClients(wo)
	if err != nil {
		return nil, err
	}
	defer closeAll(wcli)
	writer := wcli[0]
	var nerr int
	var firstErr string
	start := time.Now()
	puts := 0
	for ; puts < o.total && (o.duration <= 0 || time.Since(start) < o.duration); puts++ {
		if o.maxLag > 0 && !waitLag(tr, puts, o.maxLag, o.timeout) {
			nerr++
			if firstErr == "" {
				firstErr = fmt.Sprintf("watchers more than %d puts behind for %v", o.maxLag,
					o.timeout)
			}
			break
		}
		now := time.Now().UnixNano()
		sentNs[puts] = now
		binary.BigEndian.PutUint64(value[:8], uint64(now))
		binary.BigEndian.PutUint64(value[8:16], uint64(puts))
		pctx, pcancel := context.WithTimeout(context.Background(), o.timeout)
		_, err := writer.Put(pctx, key, string(value))
		pcancel()
		if err != nil {
			if nerr++; nerr == 1 {
				firstErr = err.Error()
			}
		}
	}
	putsDone := time.Now()
	// Wait for every watcher to see every put, 30 s at most; what is missing is reported.
	for deadline := putsDone.Add(30 * time.Second); int(tr.complete.Load()) < puts &&
		time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	end := time.Unix(0, lastEvent.Load())
	if end.Before(putsDone) {
		end = putsDone
	}
	var all []time.Duration
	for _, d := range delays {
		all = append(all, d...)
	}
	res := summarize(all, end.Sub(start))
	res.Workload, res.Total, res.Errors, res.FirstError = "watch", puts, nerr, firstErr
	res.Watchers, res.Streams = nw, o.streams
	res.Events = len(all)
	res.EventsMiss = nw*puts - len(all)
	res.EventsPerS = res.RequestsPS
	res.RequestsPS = float64(puts) / putsDone.Sub(start).Seconds()
	res.MaxLag = o.maxLag
	res.CreateSeconds = createSeconds
	last := tr.lastDelays(sentNs, puts)
	res.PutsComplete = len(last)
	if lr := summarize(last, time.Second); len(last) > 0 {
		res.LastP50Ms, res.LastP99Ms, res.LastMaxMs = lr.P50Ms, lr.P99Ms, lr.MaxMs
	}
	return res, nil
}

// waitLag blocks until put number next may be issued (fewer than maxLag puts outstanding);
// false when that did not happen within timeout.
func waitLag(tr *fanoutTracker, next, maxLag int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for int64(next)-tr.complete.Load() >= int64(maxLag) {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		select {
		case <-tr.notify:
		case <-time.After(min(left, 10*time.Millisecond)):
		}
	}
	return true
}
