package main

// Idle watchers (watch-idle): --streams gRPC watch streams over --conns connections, with
// --watchers-per-stream watchers each, every watcher on its own key (watcher n watches key
// n). Once all are created the line "ready" goes to stderr and the watchers stay open, idle,
// for --hold, or until stdin is closed when --hold is 0: the caller measures the server's
// memory meanwhile. Then one put on the first key of every stream checks that the watchers
// are still there (a watcher that does not see its put within --timeout counts as an
// error), and the result reports the number of watchers and the time to create them.

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func runWatchIdle(o options) (*Result, error) {
	clis, err := newClients(o)
	if err != nil {
		return nil, err
	}
	defer closeAll(clis)
	nw := o.streams * o.watchersPerStream
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keyOf := func(idx int) string { return makeKey(idx, o.keySize) }
	t0 := time.Now()
	chans, err := openWatchers(ctx, clis, o.streams, o.watchersPerStream, keyOf)
	if err != nil {
		return nil, err
	}
	created := time.Since(t0)
	fmt.Fprintln(os.Stderr, "ready")
	if o.hold > 0 {
		time.Sleep(o.hold)
	} else {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	// Liveness check: the first watcher of every stream must see a put on its key.
	res := &Result{Workload: "watch-idle", Watchers: nw, Streams: o.streams, Total: nw}
	res.CreateSeconds = created.Seconds()
	res.Seconds = created.Seconds()
	res.RequestsPS = float64(nw) / created.Seconds()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for s := range o.streams {
		idx := s * o.watchersPerStream
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := checkWatcher(clis[s%len(clis)], chans[idx], keyOf(idx), o.timeout)
			if err != nil {
				mu.Lock()
				if res.Errors++; res.Errors == 1 {
					res.FirstError = err.Error()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res, nil
}

func checkWatcher(cli *clientv3.Client, wch clientv3.WatchChan, key string,
	timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := cli.Put(ctx, key, "loadgen-idle-check"); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("watcher of %s was closed", key)
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watcher of %s: %w", key, err)
			}
			for _, ev := range resp.Events {
				if string(ev.Kv.Key) == key {
					return nil
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("watcher of %s saw no event within %v", key, timeout)
		}
	}
}
