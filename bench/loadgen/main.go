// Command loadgen is petcd's load generator: it drives an etcd v3 endpoint (real etcd,
// petcd, or the bare transport in bench/bare_server.py) through etcd's own Go client, so
// that the process under test, not the load, is what gets measured.
//
// Theory of operation. Flags follow the conventions of etcd's benchmark tool: --conns
// client connections are opened and --clients goroutines share them round-robin; each
// goroutine issues requests back to back (closed loop) until --total requests have been
// issued in all, or until --duration has passed. Every request's latency is recorded; at the end the requests per second
// (total / wall time of the timed phase), the mean and the p50/p90/p99/max latencies are
// printed, as text or, with --json, as one JSON object on stdout. Before the timed phase
// every connection sends one serializable Range, so connection set-up is not timed.
//
// Workloads (first argument):
//
//	put       Put key=value; keys drawn from [0, --key-space-size) at random, or in
//	          order with --sequential-keys.
//	range     Range on one key drawn the same way; --consistency l (linearizable, the
//	          default) or s (serializable). With --range-keys N > 1, a Range of the N
//	          consecutive keys from the one drawn (from [0, --key-space-size - N]), the
//	          way a client lists a page of objects. With --range-limit N > 0 instead, a
//	          Range from the drawn key to the end of the key space with limit N: a page of a
//	          long listing, whose count still covers every key to the end. With
//	          --range-past-rev, every Range reads at the revision before one more (untimed)
//	          put outside the key space, as a client's later pages read at the revision of
//	          its first one while others write.
//	txn-put   Txn with no compare and --txn-ops Put operations in its success branch.
//	txn-update  Kubernetes' optimistic update (its storage layer's GuaranteedUpdate and
//	          Create): Txn(If mod_revision(key) == the revision last seen, Then Put, Else
//	          Get). Client goroutine w owns the keys k with k % --clients == w and remembers
//	          each key's mod revision from the answers (0 before its first, which makes
//	          that Txn a create); a failed compare's Get gives the revision for the next
//	          try. Reports how many Txns took the Else branch (conflicts).
//	watch     --streams gRPC watch streams, --watchers-per-stream watchers on each, all on
//	          one key; one writer puts --total values in a row (at most --max-lag puts
//	          ahead of full delivery when set), each value carrying its send time and
//	          its number. Reports events delivered per second, the put-to-delivery delay
//	          (p50/p90/p99) and the put-to-last-delivery delay (last_p50/p99: the
//	          latest delivery of a put among all watchers), on the same clock (watch.go).
//	watch-idle  --streams x --watchers-per-stream watchers on distinct keys, held open
//	          and idle for --hold or until stdin closes, for memory measurements
//	          (idle.go).
//	lease-keepalive  grant --leases leases, then --streams LeaseKeepAlive streams cycle
//	          through them; keep-alive answers per second and the grant time (lease.go).
//	load      Put --total distinct keys 0..total-1 (sequential), as a store filler for the
//	          memory and start-up test.
//
// A key is the decimal key number, zero-padded to --key-size bytes.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type options struct {
	workload          string
	endpoints         []string
	clients           int
	conns             int
	total             int
	keySize           int
	valSize           int
	keySpaceSize      int
	sequentialKeys    bool
	consistency       string
	rangeKeys         int
	rangeLimit        int
	rangePastRev      bool
	txnOps            int
	streams           int
	watchersPerStream int
	maxLag            int
	hold              time.Duration
	leases            int
	leaseTTL          time.Duration
	revoke            bool
	jsonOut           bool
	duration          time.Duration
	timeout           time.Duration
	// TLS (etcd benchmark's --cacert, --cert, --key): all empty for plain text.
	caFile   string
	certFile string
	keyFile  string
}

// Result is what one run reports. Latency fields are milliseconds. For the watch workload
// the latency fields describe the put-to-delivery delay and Events / EventsPerS are set.
type Result struct {
	Workload   string  `json:"workload"`
	Endpoints  string  `json:"endpoints"`
	Clients    int     `json:"clients"`
	Conns      int     `json:"conns"`
	Total      int     `json:"total"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	RequestsPS float64 `json:"requests_per_s"`
	AvgMs      float64 `json:"avg_ms"`
	P50Ms      float64 `json:"p50_ms"`
	P90Ms      float64 `json:"p90_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	Events     int     `json:"events,omitempty"`
	EventsMiss int     `json:"events_missing,omitempty"`
	EventsPerS float64 `json:"events_per_s,omitempty"`
	Watchers   int     `json:"watchers,omitempty"`
	Streams    int     `json:"streams,omitempty"`
	// watch: the put-to-last-delivery delay, over the puts that reached every watcher.
	PutsComplete int     `json:"puts_complete,omitempty"`
	LastP50Ms    float64 `json:"last_p50_ms,omitempty"`
	LastP99Ms    float64 `json:"last_p99_ms,omitempty"`
	LastMaxMs    float64 `json:"last_max_ms,omitempty"`
	MaxLag       int     `json:"max_lag,omitempty"`
	// watch, watch-idle: time to create all watchers.
	CreateSeconds float64 `json:"create_seconds,omitempty"`
	// lease-keepalive
	Leases        int     `json:"leases,omitempty"`
	GrantSeconds  float64 `json:"grant_seconds,omitempty"`
	GrantsPS      float64 `json:"grants_per_s,omitempty"`
	RevokeSeconds float64 `json:"revoke_seconds,omitempty"`
	RevokeErrors  int     `json:"revoke_errors,omitempty"`
	Consistency   string  `json:"consistency,omitempty"`
	RangeKeys     int     `json:"range_keys,omitempty"`
	RangeLimit    int     `json:"range_limit,omitempty"`
	KeysRead      int64   `json:"keys_read,omitempty"`
	// txn-update: Txns whose compare failed (the Else branch ran).
	Conflicts int64 `json:"conflicts,omitempty"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		return errors.New(
			"usage: loadgen put|range|txn-put|txn-update|watch|watch-idle|lease-keepalive|load [flags]")
	}
	o := options{workload: args[0]}
	fs := flag.NewFlagSet(o.workload, flag.ContinueOnError)
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "comma-separated gRPC endpoints")
	fs.IntVar(&o.clients, "clients", 1, "concurrent request goroutines")
	fs.IntVar(&o.conns, "conns", 1, "client connections, shared round-robin by the goroutines")
	fs.IntVar(&o.total, "total", 10000, "requests (puts for watch and load) in all")
	fs.IntVar(&o.keySize, "key-size", 8, "key size in bytes")
	fs.IntVar(&o.valSize, "val-size", 8, "value size in bytes")
	fs.IntVar(&o.keySpaceSize, "key-space-size", 1, "distinct keys drawn from")
	fs.BoolVar(&o.sequentialKeys, "sequential-keys", false, "keys in order instead of at random")
	fs.StringVar(&o.consistency, "consistency", "l", "range consistency: l or s")
	fs.IntVar(&o.rangeKeys, "range-keys", 1, "range: consecutive keys per Range")
	fs.IntVar(&o.rangeLimit, "range-limit", 0,
		"range: a Range to the end of the key space with this limit (0: --range-keys)")
	fs.BoolVar(&o.rangePastRev, "range-past-rev", false,
		"range: read at the revision before one more put (not the newest)")
	fs.IntVar(&o.txnOps, "txn-ops", 1, "puts per txn (txn-put)")
	fs.IntVar(&o.streams, "streams", 10, "watch streams (watch)")
	fs.IntVar(&o.watchersPerStream, "watchers-per-stream", 10, "watchers per stream (watch)")
	fs.IntVar(&o.maxLag, "max-lag", 0,
		"watch: puts the writer may be ahead of delivery to every watcher (0: no limit)")
	fs.DurationVar(&o.hold, "hold", 0, "watch-idle: hold the watchers this long (0: until stdin closes)")
	fs.IntVar(&o.leases, "leases", 10000, "lease-keepalive: leases granted and kept alive")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 3600*time.Second, "lease-keepalive: TTL of the leases")
	fs.BoolVar(&o.revoke, "revoke", true, "lease-keepalive: revoke the leases afterwards (untimed)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as one JSON object")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.DurationVar(&o.duration, "duration", 0,
		"stop issuing requests after this long even if --total is not reached (0: no limit)")
	fs.StringVar(&o.caFile, "cacert", "", "TLS: verify the server with this CA bundle")
	fs.StringVar(&o.certFile, "cert", "", "TLS: present this client certificate")
	fs.StringVar(&o.keyFile, "key", "", "TLS: the client certificate's key")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	o.endpoints = strings.Split(*endpoints, ",")
	if err := o.validate(); err != nil {
		return err
	}
	var res *Result
	var err error
	switch o.workload {
	case "watch":
		res, err = runWatch(o)
	case "watch-idle":
		res, err = runWatchIdle(o)
	case "lease-keepalive":
		res, err = runLeaseKeepAlive(o)
	default:
		res, err = runRequests(o)
	}
	if err != nil {
		return err
	}
	return report(o, res)
}

func (o *options) validate() error {
	switch o.workload {
	case "put", "range", "txn-put", "watch", "lease-keepalive":
	case "txn-update":
		if o.keySpaceSize < o.clients {
			return errors.New("txn-update: --key-space-size must be at least --clients")
		}
	case "watch-idle":
		o.keySpaceSize = max(o.keySpaceSize, o.streams*o.watchersPerStream)
	case "load":
		o.sequentialKeys = true
		o.keySpaceSize = o.total
	default:
		return fmt.Errorf("unknown workload %q", o.workload)
	}
	if o.clients < 1 || o.conns < 1 || o.total < 1 || o.keySpaceSize < 1 || o.txnOps < 1 {
		return errors.New("--clients, --conns, --total, --key-space-size, --txn-ops must be >= 1")
	}
	if o.rangeKeys < 1 || o.rangeKeys > o.keySpaceSize {
		return errors.New("--range-keys must be >= 1 and at most --key-space-size")
	}
	if o.rangeLimit < 0 || (o.rangeLimit > 0 && o.rangeKeys > 1) {
		return errors.New("--range-limit must be >= 0, and not given with --range-keys")
	}
	if o.consistency != "l" && o.consistency != "s" {
		return errors.New("--consistency must be l or s")
	}
	if digits := len(strconv.Itoa(o.keySpaceSize - 1)); digits > o.keySize {
		return fmt.Errorf("--key-size %d cannot hold %d distinct keys", o.keySize, o.keySpaceSize)
	}
	switch o.workload {
	case "watch", "watch-idle":
		if o.streams < 1 || o.watchersPerStream < 1 || o.maxLag < 0 {
			return errors.New("--streams, --watchers-per-stream must be >= 1, --max-lag >= 0")
		}
	case "lease-keepalive":
		if o.streams < 1 || o.leases < 1 || o.leaseTTL < time.Second {
			return errors.New("--streams, --leases must be >= 1, --lease-ttl >= 1s")
		}
	}
	if o.workload == "watch" && o.valSize < 16 {
		o.valSize = 16 // the send time and the put's number travel in the first 16 bytes
	}
	return nil
}

// pastRevision puts a marker key outside every key space and returns the revision before
// that put: a revision that is not the newest.
func pastRevision(cli *clientv3.Client, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := cli.Put(ctx, "\x00loadgen-past-revision", "x")
	if err != nil {
		return 0, fmt.Errorf("--range-past-rev: %w", err)
	}
	return resp.Header.Revision - 1, nil
}

// keySpaceEnd is the first key after every key of an n-key space (keys of size bytes).
func keySpaceEnd(n, size int) string {
	if end := makeKey(n, size); len(end) == size {
		return end
	}
	return strings.Repeat("9", size) + "\x00"
}

// makeKey renders key number n zero-padded to size bytes.
func makeKey(n, size int) string {
	s := strconv.Itoa(n)
	if len(s) >= size {
		return s
	}
	return strings.Repeat("0", size-len(s)) + s
}

func newClients(o options) ([]*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:          o.endpoints,
		DialTimeout:        10 * time.Second,
		Logger:             zap.NewNop(),
		MaxCallSendMsgSize: 64 << 20,
		MaxCallRecvMsgSize: 64 << 20,
	}
	if o.caFile != "" || o.certFile != "" {
		info := transport.TLSInfo{TrustedCAFile: o.caFile, CertFile: o.certFile, KeyFile: o.keyFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	clis := make([]*clientv3.Client, 0, o.conns)
	for range o.conns {
		c, err := clientv3.New(cfg)
		if err != nil {
			closeAll(clis)
			return nil, fmt.Errorf("connect %v: %w", o.endpoints, err)
		}
		clis = append(clis, c)
	}
	// One untimed request per connection so that the timed phase starts connected.
	for _, c := range clis {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Get(ctx, "\x00loadgen-warmup", clientv3.WithSerializable())
		cancel()
		if err != nil {
			closeAll(clis)
			return nil, fmt.Errorf("warm-up request to %v: %w", o.endpoints, err)
		}
	}
	return clis, nil
}

func closeAll(clis []*clientv3.Client) {
	for _, c := range clis {
		_ = c.Close()
	}
}

func runRequests(o options) (*Result, error) {
	clis, err := newClients(o)
	if err != nil {
		return nil, err
	}
	defer closeAll(clis)
	value := string(randomBytes(o.valSize))
	spaceEnd := keySpaceEnd(o.keySpaceSize, o.keySize)
	var atRev int64
	if o.workload == "range" && o.rangePastRev {
		if atRev, err = pastRevision(clis[0], o.timeout); err != nil {
			return nil, err
		}
	}
	var next atomic.Int64 // index of the next request to issue
	var nerr atomic.Int64
	var keysRead atomic.Int64
	var conflicts atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, o.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range o.clients {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cli := clis[w%len(clis)]
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			mine := make([]time.Duration, 0, o.total/o.clients+1)
			seen := map[int]int64{} // txn-update: the mod revision last seen of each own key
			for {
				i := int(next.Add(1) - 1)
				if i >= o.total || (o.duration > 0 && time.Since(start) >= o.duration) {
					break
				}
				span := o.keySpaceSize - o.rangeKeys + 1 // first keys of a full --range-keys run
				k := i % span
				if !o.sequentialKeys {
					k = rng.IntN(span)
				}
				if o.workload == "txn-update" {
					k = ownKey(w, o.clients, o.keySpaceSize, rng)
				}
				end := ""
				if o.rangeKeys > 1 {
					end = makeKey(k+o.rangeKeys, o.keySize)
				} else if o.rangeLimit > 0 {
					end = spaceEnd
				}
				t0 := time.Now()
				var n int
				var err error
				if o.workload == "txn-update" {
					var ok bool
					ok, err = doUpdate(o, cli, makeKey(k, o.keySize), value, k, seen)
					if err == nil && !ok {
						conflicts.Add(1)
					}
				} else {
					n, err = doRequest(o, cli, makeKey(k, o.keySize), end, value, atRev)
				}
				mine = append(mine, time.Since(t0))
				keysRead.Add(int64(n))
				if err != nil {
					if nerr.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
				}
			}
			lat[w] = mine
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	res := summarize(all, elapsed)
	res.Workload, res.Total, res.Errors = o.workload, len(all), int(nerr.Load())
	if s, ok := firstErr.Load().(string); ok {
		res.FirstError = s
	}
	if o.workload == "range" {
		res.Consistency = o.consistency
		res.KeysRead = keysRead.Load()
		if o.rangeKeys > 1 {
			res.RangeKeys = o.rangeKeys
		}
		res.RangeLimit = o.rangeLimit
	}
	res.Conflicts = conflicts.Load()
	return res, nil
}

// ownKey draws one of goroutine w's own keys for txn-update: the k < space with
// k % clients == w (space >= clients, so every goroutine has at least one).
func ownKey(w, clients, space int, rng *mrand.Rand) int {
	return w + clients*rng.IntN((space-w+clients-1)/clients)
}

// doUpdate issues one txn-update Txn on key (number k) and records the key's mod revision
// in seen; it returns whether the compare held (the Put ran).
func doUpdate(o options, cli *clientv3.Client, key, value string, k int, seen map[int]int64) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", seen[k])).
		Then(clientv3.OpPut(key, value)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, err
	}
	if resp.Succeeded {
		seen[k] = resp.Header.Revision
		return true, nil
	}
	if len(resp.Responses) != 1 || resp.Responses[0].GetResponseRange() == nil {
		return false, fmt.Errorf("txn-update: the Else branch answered %v", resp.Responses)
	}
	seen[k] = 0
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		seen[k] = kvs[0].ModRevision
	}
	return false, nil
}

// doRequest issues one request; for a Range it returns the keys read. end: a Range's
// range end ("": the key alone).
func doRequest(o options, cli *clientv3.Client, key, end, value string, atRev int64) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	var err error
	switch o.workload {
	case "put", "load":
		_, err = cli.Put(ctx, key, value)
	case "range":
		var opts []clientv3.OpOption
		if o.consistency == "s" {
			opts = append(opts, clientv3.WithSerializable())
		}
		if end != "" {
			opts = append(opts, clientv3.WithRange(end))
		}
		if o.rangeLimit > 0 {
			opts = append(opts, clientv3.WithLimit(int64(o.rangeLimit)))
		}
		if atRev > 0 {
			opts = append(opts, clientv3.WithRev(atRev))
		}
		resp, gerr := cli.Get(ctx, key, opts...)
		if gerr != nil {
			return 0, gerr
		}
		return len(resp.Kvs), nil
	case "txn-put":
		ops := make([]clientv3.Op, o.txnOps)
		for j := range ops {
			k := key
			if j > 0 {
				k = fmt.Sprintf("%s-%d", key, j)
			}
			ops[j] = clientv3.OpPut(k, value)
		}
		_, err = cli.Txn(ctx).Then(ops...).Commit()
	}
	return 0, err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// summarize turns latencies into rates and percentiles (nearest-rank).
func summarize(lat []time.Duration, elapsed time.Duration) *Result {
	r := &Result{Seconds: elapsed.Seconds()}
	if len(lat) == 0 {
		return r
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.RequestsPS = float64(len(lat)) / elapsed.Seconds()
	r.AvgMs = ms(sum / time.Duration(len(lat)))
	r.P50Ms = ms(percentile(lat, 50))
	r.P90Ms = ms(percentile(lat, 90))
	r.P99Ms = ms(percentile(lat, 99))
	r.MaxMs = ms(lat[len(lat)-1])
	return r
}

// percentile returns the nearest-rank p-th percentile of sorted (ascending) samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

func report(o options, r *Result) error {
	r.Endpoints = strings.Join(o.endpoints, ",")
	r.Clients, r.Conns = o.clients, o.conns
	if o.jsonOut {
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	fmt.Printf("workload %s: %d requests, %d errors, %.2fs\n", r.Workload, r.Total, r.Errors,
		r.Seconds)
	switch r.Workload {
	case "watch":
		fmt.Printf("  watchers %d  events %d (missing %d)  events/s %.1f  puts/s %.1f\n",
			r.Watchers, r.Events, r.EventsMiss, r.EventsPerS, r.RequestsPS)
		fmt.Printf("  delivery delay ms: avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
			r.AvgMs, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
		fmt.Printf("  put-to-last-delivery ms (%d puts): p50 %.3f  p99 %.3f  max %.3f\n",
			r.PutsComplete, r.LastP50Ms, r.LastP99Ms, r.LastMaxMs)
	case "watch-idle":
		fmt.Printf("  watchers %d on %d streams, created in %.2fs\n", r.Watchers, r.Streams,
			r.CreateSeconds)
	case "lease-keepalive":
		fmt.Printf("  %d leases granted in %.2fs (%.1f/s)\n", r.Leases, r.GrantSeconds, r.GrantsPS)
		fmt.Printf("  keep-alives/s %.1f\n", r.RequestsPS)
		fmt.Printf("  latency ms: avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
			r.AvgMs, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
	default:
		fmt.Printf("  requests/s %.1f\n", r.RequestsPS)
		if r.RangeKeys > 1 {
			fmt.Printf("  keys read %d (%.1f per Range of %d)\n", r.KeysRead,
				float64(r.KeysRead)/float64(max(r.Total, 1)), r.RangeKeys)
		}
		fmt.Printf("  latency ms: avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
			r.AvgMs, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
	}
	if r.FirstError != "" {
		fmt.Printf("  first error: %s\n", r.FirstError)
	}
	return nil
}
