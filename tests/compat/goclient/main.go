// Command k8sclient drives one etcd-compatible server with go.etcd.io/etcd/client/v3
// the way Kubernetes' apiserver storage layer (k8s.io/apiserver/pkg/storage/etcd3)
// and the clientv3/concurrency recipes do, and prints a normalised transcript.
//
// Theory of operation: every step prints one JSON object on its own line
// ({"step": ..., ...}; keys sorted by encoding/json). The transcript holds only
// what must be identical between a real etcd and petcd given the same
// operations in the same order: store revisions, values, versions, counts,
// flags, and error texts. Values that legitimately differ between two clusters
// are normalised here: lease ids print as "lease1", "lease2"... in order of
// first appearance, members by name, raft terms and indexes are
// dropped, and endpoint i prints as "ENDPOINT<i>". Nothing printed depends on
// timing: concurrent parts (mutex contention, election hand-over, STM
// transfers) wait for observable states before moving on and report only
// order-independent outcomes (balances, counts, the final revision).
//
// The program expects a fresh, otherwise idle server or cluster: it compacts
// the whole keyspace. Given several endpoints (a cluster, as an apiserver's
// --etcd-servers), it replaces what a lagging follower may legitimately
// report (serializable reads, a member's own status revision) with checks. On an unexpected error it prints a "fatal" step
// and exits with status 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/zap"
)

const stepTimeout = 10 * time.Second

type driver struct {
	cli       *clientv3.Client
	endpoints []string
	multi     bool
	leases    map[clientv3.LeaseID]string
}

func (d *driver) emit(step string, fields map[string]any) {
	fields["step"] = step
	line, err := json.Marshal(fields)
	if err != nil {
		d.fatal("marshal", err)
	}
	fmt.Println(string(line))
}

func (d *driver) fatal(step string, err error) {
	line, _ := json.Marshal(map[string]any{"step": "fatal", "at": step, "error": err.Error()})
	fmt.Println(string(line))
	os.Exit(1)
}

func (d *driver) check(step string, err error) {
	if err != nil {
		d.fatal(step, err)
	}
}

func (d *driver) lease(id clientv3.LeaseID) string {
	if id == 0 {
		return ""
	}
	name, ok := d.leases[id]
	if !ok {
		name = "lease" + strconv.Itoa(len(d.leases)+1)
		d.leases[id] = name
	}
	return name
}

func (d *driver) kv(kv *mvccpb.KeyValue) map[string]any {
	if kv == nil {
		return nil
	}
	lease := d.lease(clientv3.LeaseID(kv.Lease)) // named before the key that may hold it
	return map[string]any{
		"key": d.key(string(kv.Key)), "value": string(kv.Value), "create": kv.CreateRevision,
		"mod": kv.ModRevision, "version": kv.Version, "lease": lease,
	}
}

// key names a session's lease in the keys of locks and elections (prefix/<lease hex>).
func (d *driver) key(key string) string {
	cut := strings.LastIndex(key, "/")
	id, err := strconv.ParseUint(key[cut+1:], 16, 64)
	if err != nil {
		return key
	}
	if name, ok := d.leases[clientv3.LeaseID(id)]; ok {
		return key[:cut+1] + "<" + name + ">"
	}
	return key
}

func (d *driver) kvs(kvs []*mvccpb.KeyValue) []map[string]any {
	out := []map[string]any{}
	for _, kv := range kvs {
		out = append(out, d.kv(kv))
	}
	return out
}

func (d *driver) txn(resp *clientv3.TxnResponse) map[string]any {
	ops := []map[string]any{}
	for _, r := range resp.Responses {
		switch {
		case r.GetResponsePut() != nil:
			p := r.GetResponsePut()
			ops = append(ops, map[string]any{"put": p.Header.Revision, "prev": d.kv(p.PrevKv)})
		case r.GetResponseRange() != nil:
			g := r.GetResponseRange()
			ops = append(ops, map[string]any{"range": d.kvs(g.Kvs), "count": g.Count, "more": g.More})
		case r.GetResponseDeleteRange() != nil:
			x := r.GetResponseDeleteRange()
			ops = append(ops, map[string]any{"deleted": x.Deleted, "prev": d.kvs(x.PrevKvs)})
		}
	}
	return map[string]any{"succeeded": resp.Succeeded, "rev": resp.Header.Revision, "ops": ops}
}

func (d *driver) events(evs []*clientv3.Event) []map[string]any {
	out := []map[string]any{}
	for _, ev := range evs {
		out = append(out, map[string]any{
			"type": ev.Type.String(), "kv": d.kv(ev.Kv), "prev": d.kv(ev.PrevKv),
		})
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), stepTimeout)
}

// create is storage.Create: put only if the key has never existed, else read it back.
func (d *driver) create(key, val string, lease clientv3.LeaseID) *clientv3.TxnResponse {
	c, cancel := ctx()
	defer cancel()
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	resp, err := d.cli.Txn(c).If(
		clientv3.Compare(clientv3.ModRevision(key), "=", 0),
	).Then(clientv3.OpPut(key, val, opts...)).Else(clientv3.OpGet(key)).Commit()
	d.check("create "+key, err)
	return resp
}

// guaranteedUpdate is storage.GuaranteedUpdate: a compare-and-swap loop on the
// mod revision, starting from a possibly stale cached object.
func (d *driver) guaranteedUpdate(key string, cachedRev int64, update func(string) string) {
	c, cancel := ctx()
	defer cancel()
	value := ""
	rev := cachedRev
	if rev == 0 {
		resp, err := d.cli.Get(c, key)
		d.check("update get "+key, err)
		rev = resp.Kvs[0].ModRevision
		value = string(resp.Kvs[0].Value)
	}
	for attempt := 1; attempt <= 3; attempt++ {
		resp, err := d.cli.Txn(c).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", rev),
		).Then(clientv3.OpPut(key, update(value))).Else(clientv3.OpGet(key)).Commit()
		d.check("update txn "+key, err)
		d.emit("update", map[string]any{"key": key, "attempt": attempt, "txn": d.txn(resp)})
		if resp.Succeeded {
			return
		}
		got := resp.Responses[0].GetResponseRange().Kvs[0]
		rev, value = got.ModRevision, string(got.Value)
	}
	d.fatal("update "+key, errors.New("no success after 3 attempts"))
}

func (d *driver) crud() {
	c, cancel := ctx()
	defer cancel()
	for _, name := range []string{"a", "b", "c"} {
		resp := d.create("/registry/pods/default/"+name, "pod-"+name+"-v1", 0)
		d.emit("create", map[string]any{"name": name, "txn": d.txn(resp)})
	}
	resp := d.create("/registry/pods/default/a", "pod-a-again", 0)
	d.emit("create-exists", map[string]any{"txn": d.txn(resp)})

	// A fresh read, then one update; then an update from a stale cache (the
	// first attempt fails and returns the current object, the second succeeds).
	d.guaranteedUpdate("/registry/pods/default/a", 0, func(v string) string { return v + "+1" })
	get, err := d.cli.Get(c, "/registry/pods/default/b")
	d.check("get b", err)
	stale := get.Kvs[0].ModRevision
	_, err = d.cli.Put(c, "/registry/pods/default/b", "pod-b-v2")
	d.check("put b", err)
	d.guaranteedUpdate("/registry/pods/default/b", stale, func(v string) string { return v + "+2" })

	// Delete with a precondition on the mod revision (a stale one first).
	key := "/registry/pods/default/c"
	for attempt := 1; attempt <= 2; attempt++ {
		rev := stale
		if attempt == 2 {
			cur, err := d.cli.Get(c, key)
			d.check("get c", err)
			rev = cur.Kvs[0].ModRevision
		}
		del, err := d.cli.Txn(c).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", rev),
		).Then(clientv3.OpDelete(key, clientv3.WithPrevKV())).Else(clientv3.OpGet(key)).Commit()
		d.check("delete c", err)
		d.emit("delete", map[string]any{"txn": d.txn(del)})
	}
	// Re-creating a deleted key works (mod revision 0 again).
	d.emit("recreate", map[string]any{"txn": d.txn(d.create(key, "pod-c-v2", 0))})
}

func (d *driver) list() {
	c, cancel := ctx()
	defer cancel()
	prefix := "/registry/configmaps/"
	for i := 0; i < 11; i++ {
		ns := []string{"kube-system", "default"}[i%2]
		_, err := d.cli.Put(c, fmt.Sprintf("%s%s/cm-%02d", prefix, ns, i), fmt.Sprintf("data-%d", i))
		d.check("put configmap", err)
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	count, err := d.cli.Get(c, prefix, clientv3.WithRange(end), clientv3.WithCountOnly())
	d.check("count", err)
	d.emit("count", map[string]any{"count": count.Count, "kvs": len(count.Kvs),
		"rev": count.Header.Revision})

	// Pages of 4: the first at the current revision, the next ones at the
	// revision of the first, from the last key + "\x00"; writes in between
	// must not show.
	key, rev := prefix, int64(0)
	for page := 1; ; page++ {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(4)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := d.cli.Get(c, key, opts...)
		d.check("list page", err)
		keys := []string{}
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
		d.emit("list", map[string]any{"page": page, "keys": keys, "more": resp.More,
			"count": resp.Count, "rev": resp.Header.Revision, "first": d.kv(resp.Kvs[0])})
		if page == 1 {
			rev = resp.Header.Revision
			_, err = d.cli.Put(c, prefix+"default/cm-00", "changed")
			d.check("put during list", err)
			_, err = d.cli.Put(c, prefix+"kube-system/cm-99", "late")
			d.check("put during list", err)
			_, err = d.cli.Delete(c, prefix+"kube-system/cm-09")
			d.check("delete during list", err)
		}
		if !resp.More {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	// A list of one namespace, keys only, and a list at an old revision.
	resp, err := d.cli.Get(c, prefix+"default/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	d.check("list ns", err)
	d.emit("list-ns", map[string]any{"kvs": d.kvs(resp.Kvs), "count": resp.Count})
	resp, err = d.cli.Get(c, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev),
		clientv3.WithCountOnly())
	d.check("count old", err)
	d.emit("count-at", map[string]any{"at": rev, "count": resp.Count, "rev": resp.Header.Revision})
	// A revision in the future.
	_, err = d.cli.Get(c, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+100))
	d.emit("future", map[string]any{"error": errText(err)})
}

func (d *driver) leasesForEvents() {
	c, cancel := ctx()
	defer cancel()
	grant, err := d.cli.Grant(c, 3600)
	d.check("grant", err)
	d.emit("grant", map[string]any{"lease": d.lease(grant.ID), "ttl": grant.TTL,
		"error": grant.Error})
	// Kubernetes reuses one lease for the events created close together.
	for i := 1; i <= 3; i++ {
		key := fmt.Sprintf("/registry/events/default/ev-%d", i)
		d.emit("create-event", map[string]any{"txn": d.txn(d.create(key, "event", grant.ID))})
	}
	ttl, err := d.cli.TimeToLive(c, grant.ID, clientv3.WithAttachedKeys())
	d.check("ttl", err)
	keys := []string{}
	for _, k := range ttl.Keys {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	d.emit("lease-keys", map[string]any{"lease": d.lease(ttl.ID), "granted": ttl.GrantedTTL,
		"keys": keys, "ttl_ok": ttl.TTL > 3500 && ttl.TTL <= 3600})
	_, err = d.cli.Revoke(c, grant.ID)
	d.check("revoke", err)
	resp, err := d.cli.Get(c, "/registry/events/", clientv3.WithPrefix())
	d.check("get events", err)
	d.emit("after-revoke", map[string]any{"count": resp.Count, "rev": resp.Header.Revision})
	// The cacher sees expiring events as deletes, all at the revoke's revision,
	// with the object (and its lease) in prev_kv.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	ch := d.cli.Watch(wctx, "/registry/events/", clientv3.WithPrefix(), clientv3.WithPrevKV(),
		clientv3.WithRev(resp.Header.Revision-3))
	var evs []*clientv3.Event
	for len(evs) < 6 {
		wresp := d.recv("watch events", ch)
		if wresp.Err() != nil {
			d.fatal("watch events", wresp.Err())
		}
		evs = append(evs, wresp.Events...)
	}
	d.emit("event-expiry", map[string]any{"events": d.events(evs)})
	// A TTL below the minimum (1.5 election timeouts, rounded up) is raised.
	short, err := d.cli.Grant(c, 1)
	d.check("grant 1s", err)
	d.emit("grant-short", map[string]any{"lease": d.lease(short.ID), "ttl": short.TTL})
	_, err = d.cli.Revoke(c, short.ID)
	d.check("revoke short", err)
	_, err = d.cli.Put(c, "/registry/events/default/ev-9", "x", clientv3.WithLease(grant.ID))
	d.emit("put-revoked-lease", map[string]any{"error": errText(err)})
	_, err = d.cli.Revoke(c, grant.ID)
	d.emit("revoke-again", map[string]any{"error": errText(err)})
	// The lease manager's cached lease was revoked behind its back: Create fails.
	_, err = d.cli.Txn(c).If(
		clientv3.Compare(clientv3.ModRevision("/registry/events/default/ev-9"), "=", 0),
	).Then(clientv3.OpPut("/registry/events/default/ev-9", "x", clientv3.WithLease(grant.ID))).
		Else(clientv3.OpGet("/registry/events/default/ev-9")).Commit()
	d.emit("create-revoked-lease", map[string]any{"error": errText(err)})
}

func (d *driver) recv(step string, ch clientv3.WatchChan) clientv3.WatchResponse {
	select {
	case resp, ok := <-ch:
		if !ok {
			d.fatal(step, errors.New("watch channel closed"))
		}
		return resp
	case <-time.After(stepTimeout):
		d.fatal(step, errors.New("no watch response"))
	}
	panic("unreachable")
}

// watchCache is the apiserver's cacher: list at R, then watch from R+1 with
// prev kvs and progress notifications, and ask for progress to serve
// consistent reads from the cache.
func (d *driver) watchCache() {
	c, cancel := ctx()
	defer cancel()
	prefix := "/registry/pods/"
	list, err := d.cli.Get(c, prefix, clientv3.WithPrefix())
	d.check("watch list", err)
	listRev := list.Header.Revision
	d.emit("cache-list", map[string]any{"rev": listRev, "count": list.Count})
	// Writes between the list and the watch must be replayed by the watch.
	_, err = d.cli.Put(c, prefix+"default/d", "pod-d-v1")
	d.check("put d", err)
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer wcancel()
	ch := d.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(listRev+1),
		clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	_, err = d.cli.Put(c, prefix+"default/a", "pod-a-v3")
	d.check("put a", err)
	_, err = d.cli.Delete(c, prefix+"default/b")
	d.check("delete b", err)
	_, err = d.cli.Put(c, "/registry/other/x", "outside the prefix")
	d.check("put other", err)
	// How events are grouped into responses depends on timing (catch-up from
	// history or live), so the transcript holds the events in order and
	// whether every response's revision covers its events.
	var evs []*clientv3.Event
	headersOK := true
	for len(evs) < 3 {
		resp := d.recv("watch events", ch)
		evs = append(evs, resp.Events...)
		if len(resp.Events) == 0 || resp.Header.Revision < evs[len(evs)-1].Kv.ModRevision {
			headersOK = false
		}
	}
	d.emit("cache-events", map[string]any{"events": d.events(evs), "headers_ok": headersOK})
	// No more events are pending: a requested progress notification carries
	// the current revision (the write outside the prefix included).
	resp := d.progressUntil(wctx, ch)
	d.emit("cache-progress", map[string]any{"progress": resp.IsProgressNotify(),
		"rev": resp.Header.Revision, "events": len(resp.Events)})
	// An event after the progress notification.
	_, err = d.cli.Put(c, prefix+"default/e", "pod-e-v1")
	d.check("put e", err)
	resp = d.recv("watch after progress", ch)
	d.emit("cache-events", map[string]any{"events": d.events(resp.Events),
		"rev": resp.Header.Revision, "progress": resp.IsProgressNotify()})
}

// progressUntil is the consistent read from cache (Kubernetes 1.31+): learn
// the store's current revision with a linearizable read, then request progress
// until the watch stream reports at least that revision (a watch served by a
// follower may lag behind for a moment).
func (d *driver) progressUntil(wctx context.Context, ch clientv3.WatchChan) clientv3.WatchResponse {
	c, cancel := ctx()
	defer cancel()
	current, err := d.cli.Get(c, "health")
	d.check("current revision", err)
	for attempt := 0; attempt < 100; attempt++ {
		d.check("request progress", d.cli.RequestProgress(wctx))
		resp := d.recv("progress", ch)
		if !resp.IsProgressNotify() || resp.Header.Revision >= current.Header.Revision {
			return resp
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.fatal("progress", errors.New("the watch never caught up"))
	panic("unreachable")
}

// compaction is the apiserver's compactor: a compare-and-swap on the version
// of compact_rev_key elects one compactor per interval, which then compacts.
func (d *driver) compaction() {
	c, cancel := ctx()
	defer cancel()
	key := "compact_rev_key"
	head, err := d.cli.Get(c, "/registry/pods/default/a")
	d.check("get a", err)
	oldRev := head.Kvs[0].CreateRevision
	var version int64
	for run := 1; run <= 3; run++ {
		status, err := d.cli.Get(c, "health")
		d.check("current rev", err)
		rev := status.Header.Revision
		cmpVersion := version
		if run == 3 {
			cmpVersion = 0 // another apiserver with a stale view loses the race
		}
		resp, err := d.cli.Txn(c).If(
			clientv3.Compare(clientv3.Version(key), "=", cmpVersion),
		).Then(clientv3.OpPut(key, strconv.FormatInt(rev, 10))).Else(clientv3.OpGet(key)).Commit()
		d.check("compact txn", err)
		d.emit("compact-txn", map[string]any{"run": run, "txn": d.txn(resp)})
		if !resp.Succeeded {
			version = resp.Responses[0].GetResponseRange().Kvs[0].Version
			continue
		}
		version++
		comp, err := d.cli.Compact(c, rev)
		d.check("compact", err)
		d.emit("compact", map[string]any{"run": run, "at": rev, "rev": comp.Header.Revision})
		_, err = d.cli.Put(c, "/registry/pods/default/a", fmt.Sprintf("pod-a-run%d", run))
		d.check("put after compact", err)
	}
	compacted, err := d.cli.Get(c, key)
	d.check("get compact key", err)
	at, _ := strconv.ParseInt(string(compacted.Kvs[0].Value), 10, 64)

	_, err = d.cli.Get(c, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithRev(oldRev))
	d.emit("get-compacted", map[string]any{"at": oldRev, "error": errText(err)})
	_, err = d.cli.Get(c, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithRev(at-1))
	d.emit("get-compacted", map[string]any{"at": at - 1, "error": errText(err)})
	resp, err := d.cli.Get(c, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithRev(at))
	d.check("get at compact rev", err)
	d.emit("get-at-compact", map[string]any{"at": at, "kvs": d.kvs(resp.Kvs)})
	_, err = d.cli.Compact(c, at-1)
	d.emit("compact-again", map[string]any{"at": at - 1, "error": errText(err)})
	_, err = d.cli.Compact(c, at+1000)
	d.emit("compact-future", map[string]any{"error": errText(err)})

	// A watch from before the compaction is cancelled with the compact revision.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	ch := d.cli.Watch(wctx, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithRev(oldRev))
	wresp := d.recv("compacted watch", ch)
	d.emit("watch-compacted", map[string]any{"compact": wresp.CompactRevision,
		"canceled": wresp.Canceled, "error": errText(wresp.Err()), "events": len(wresp.Events)})
	select {
	case _, ok := <-ch:
		d.emit("watch-closed", map[string]any{"closed": !ok})
	case <-time.After(stepTimeout):
		d.fatal("watch-closed", errors.New("channel not closed"))
	}
	// From the compact revision itself the history is still there.
	ch = d.cli.Watch(wctx, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithRev(at))
	var evs []*clientv3.Event
	for len(evs) < 2 {
		wresp = d.recv("watch at compact rev", ch)
		if wresp.Err() != nil {
			d.fatal("watch at compact rev", wresp.Err())
		}
		evs = append(evs, wresp.Events...)
	}
	d.emit("watch-at-compact", map[string]any{"events": d.events(evs)})
}

func (d *driver) health() {
	c, cancel := ctx()
	defer cancel()
	// The apiserver's etcd health check is a Get of "health".
	get, err := d.cli.Get(c, "health")
	d.check("health", err)
	d.emit("health", map[string]any{"count": get.Count, "rev": get.Header.Revision})
	ser, err := d.cli.Get(c, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithSerializable(),
		clientv3.WithKeysOnly())
	d.check("serializable", err)
	if d.multi {
		// A follower may not have applied the latest write yet.
		d.emit("serializable", map[string]any{"rev_ok": ser.Header.Revision <= get.Header.Revision})
	} else {
		d.emit("serializable", map[string]any{"kvs": d.kvs(ser.Kvs), "rev": ser.Header.Revision})
	}
	// Members are named (by --name) from the member list, so that the
	// transcript does not depend on which member happens to lead.
	members, err := d.cli.MemberList(c)
	d.check("member list", err)
	names := map[uint64]string{}
	out := []map[string]any{}
	for _, m := range members.Members {
		names[m.ID] = m.Name
		urls := []string{}
		for _, u := range m.ClientURLs {
			for i, e := range d.endpoints {
				u = strings.ReplaceAll(u, e, "ENDPOINT"+strconv.Itoa(i))
			}
			urls = append(urls, u)
		}
		out = append(out, map[string]any{"name": m.Name, "client_urls": urls,
			"peer_urls": len(m.PeerURLs), "learner": m.IsLearner})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"].(string) < out[j]["name"].(string) })
	d.emit("member-list", map[string]any{"members": out})
	for _, endpoint := range d.endpoints {
		status, err := d.cli.Status(c, endpoint)
		d.check("status", err)
		_, leaderKnown := names[status.Leader]
		fields := map[string]any{
			"self":         names[status.Header.MemberId],
			"leader_known": leaderKnown,
			"version":      strings.Count(status.Version, ".") == 2,
			"db":           status.DbSize > 0,
			"learner":      status.IsLearner,
			"errors":       status.Errors,
			"raft_index":   status.RaftIndex > 0,
			"rev_ok":       status.Header.Revision <= get.Header.Revision,
		}
		if !d.multi {
			fields["rev"] = status.Header.Revision
			fields["leader_is_self"] = status.Leader == status.Header.MemberId
		}
		d.emit("status", fields)
	}
	// The endpoints the client knows, as Kubernetes' health probes list them.
	d.emit("endpoints", map[string]any{"endpoints": len(d.cli.Endpoints())})
}

func (d *driver) waitCount(prefix string, want int64) {
	deadline := time.Now().Add(stepTimeout)
	for time.Now().Before(deadline) {
		c, cancel := ctx()
		resp, err := d.cli.Get(c, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		d.check("wait count", err)
		if resp.Count == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.fatal("wait count "+prefix, fmt.Errorf("never saw %d keys", want))
}

func (d *driver) mutex() {
	c, cancel := ctx()
	defer cancel()
	s1, err := concurrency.NewSession(d.cli, concurrency.WithTTL(30))
	d.check("session 1", err)
	s2, err := concurrency.NewSession(d.cli, concurrency.WithTTL(30))
	d.check("session 2", err)
	d.emit("sessions", map[string]any{"s1": d.lease(s1.Lease()), "s2": d.lease(s2.Lease())})
	m1 := concurrency.NewMutex(s1, "/locks/job")
	m2 := concurrency.NewMutex(s2, "/locks/job")
	d.check("lock 1", m1.Lock(c))
	d.emit("locked", map[string]any{"who": 1, "rev": m1.Header().Revision})
	err = m2.TryLock(c)
	d.emit("trylock", map[string]any{"who": 2, "error": errText(err),
		"locked": errors.Is(err, concurrency.ErrLocked)})
	acquired := make(chan error, 1)
	go func() { acquired <- m2.Lock(c) }()
	d.waitCount("/locks/job", 2)
	select {
	case <-acquired:
		d.fatal("mutex", errors.New("second session acquired a held lock"))
	default:
	}
	d.check("unlock 1", m1.Unlock(c))
	select {
	case err := <-acquired:
		d.check("lock 2", err)
	case <-time.After(stepTimeout):
		d.fatal("mutex", errors.New("second session never acquired the lock"))
	}
	owner, err := d.cli.Txn(c).If(m2.IsOwner()).Commit()
	d.check("is owner", err)
	d.emit("locked", map[string]any{"who": 2, "owner": owner.Succeeded,
		"rev": m2.Header().Revision})
	d.check("unlock 2", m2.Unlock(c))
	d.check("close 1", s1.Close())
	d.check("close 2", s2.Close())
	resp, err := d.cli.Get(c, "/locks/", clientv3.WithPrefix())
	d.check("get locks", err)
	d.emit("unlocked", map[string]any{"count": resp.Count, "rev": resp.Header.Revision})
}

func (d *driver) observe(step string, ch <-chan clientv3.GetResponse, want string) {
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				d.fatal(step, errors.New("observe channel closed"))
			}
			value := string(resp.Kvs[0].Value)
			if value == want {
				d.emit("observe", map[string]any{"at": step, "value": value,
					"mod": resp.Kvs[0].ModRevision})
				return
			}
		case <-time.After(stepTimeout):
			d.fatal(step, fmt.Errorf("never observed %q", want))
		}
	}
}

func (d *driver) election() {
	c, cancel := ctx()
	defer cancel()
	s1, err := concurrency.NewSession(d.cli, concurrency.WithTTL(30))
	d.check("session 1", err)
	s2, err := concurrency.NewSession(d.cli, concurrency.WithTTL(30))
	d.check("session 2", err)
	d.emit("sessions", map[string]any{"s1": d.lease(s1.Lease()), "s2": d.lease(s2.Lease())})
	e1 := concurrency.NewElection(s1, "/election/controller")
	e2 := concurrency.NewElection(s2, "/election/controller")
	_, err = e1.Leader(c)
	d.emit("leader", map[string]any{"error": errText(err),
		"no_leader": errors.Is(err, concurrency.ErrElectionNoLeader)})
	d.check("campaign 1", e1.Campaign(c, "candidate-1"))
	d.emit("campaigned", map[string]any{"who": 1, "rev": e1.Rev()})
	octx, ocancel := context.WithCancel(context.Background())
	defer ocancel()
	obs := e1.Observe(octx)
	d.observe("first", obs, "candidate-1")
	won := make(chan error, 1)
	go func() { won <- e2.Campaign(c, "candidate-2") }()
	d.waitCount("/election/controller", 2)
	d.check("proclaim", e1.Proclaim(c, "candidate-1b"))
	d.observe("proclaimed", obs, "candidate-1b")
	leader, err := e2.Leader(c)
	d.check("leader", err)
	d.emit("leader", map[string]any{"kv": d.kv(leader.Kvs[0])})
	d.check("resign", e1.Resign(c))
	select {
	case err := <-won:
		d.check("campaign 2", err)
	case <-time.After(stepTimeout):
		d.fatal("election", errors.New("second candidate never won"))
	}
	d.emit("campaigned", map[string]any{"who": 2, "rev": e2.Rev()})
	d.observe("resigned", obs, "candidate-2")
	leader, err = e1.Leader(c)
	d.check("leader", err)
	d.emit("leader", map[string]any{"kv": d.kv(leader.Kvs[0])})
	d.check("resign 2", e2.Resign(c))
	d.check("close 1", s1.Close())
	d.check("close 2", s2.Close())
}

// stm moves money between accounts from concurrent goroutines with
// serializable snapshot isolation; fixed amounts make the final balances
// independent of the interleaving, so a lost update shows.
func (d *driver) stm() {
	c, cancel := ctx()
	defer cancel()
	const accounts, workers, transfers = 5, 4, 10
	for i := 0; i < accounts; i++ {
		_, err := d.cli.Put(c, fmt.Sprintf("/bank/acct-%d", i), "100")
		d.check("open account", err)
	}
	var mu sync.Mutex
	commits := 0
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for t := 0; t < transfers; t++ {
				from := rng.Intn(accounts)
				to := (from + 1 + rng.Intn(accounts-1)) % accounts
				amount := 1 + rng.Intn(20)
				transfer := func(s concurrency.STM) error {
					fk, tk := fmt.Sprintf("/bank/acct-%d", from), fmt.Sprintf("/bank/acct-%d", to)
					fb, err1 := strconv.Atoi(s.Get(fk))
					tb, err2 := strconv.Atoi(s.Get(tk))
					if err1 != nil || err2 != nil {
						return fmt.Errorf("bad balance: %v %v", err1, err2)
					}
					s.Put(fk, strconv.Itoa(fb-amount))
					s.Put(tk, strconv.Itoa(tb+amount))
					return nil
				}
				_, err := concurrency.NewSTM(d.cli, transfer,
					concurrency.WithIsolation(concurrency.SerializableSnapshot))
				// On a cluster, the snapshot's later serializable reads may reach a
				// follower that has not applied that revision yet (etcd as well):
				// such a transfer wrote nothing and is run again.
				for retry := 0; d.multi && err != nil && retry < 50 &&
					err.Error() == "etcdserver: mvcc: required revision is a future revision"; retry++ {
					_, err = concurrency.NewSTM(d.cli, transfer,
						concurrency.WithIsolation(concurrency.SerializableSnapshot))
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				commits++
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		d.check("stm", err)
	}
	resp, err := d.cli.Get(c, "/bank/", clientv3.WithPrefix())
	d.check("balances", err)
	balances := map[string]int{}
	sum := 0
	for _, kv := range resp.Kvs {
		b, err := strconv.Atoi(string(kv.Value))
		d.check("balance", err)
		balances[string(kv.Key)] = b
		sum += b
	}
	d.emit("stm", map[string]any{"commits": commits, "sum": sum, "balances": balances,
		"rev": resp.Header.Revision})
}

// largeObjects is a list of big resources (ConfigMaps and Secrets near the
// 1.5 MiB request limit): the whole list is one response far above gRPC's
// default 4 MiB message size, which the apiserver's client accepts.
func (d *driver) largeObjects() {
	c, cancel := ctx()
	defer cancel()
	prefix := "/registry/secrets/big/"
	value := strings.Repeat("s", 900*1024)
	for i := 0; i < 12; i++ {
		key := fmt.Sprintf("%sobj-%02d", prefix, i)
		resp := d.create(key, value+strconv.Itoa(i), 0)
		d.emit("create-large", map[string]any{"i": i, "succeeded": resp.Succeeded,
			"rev": resp.Header.Revision})
	}
	_, err := d.cli.Put(c, prefix+"too-large", strings.Repeat("x", 1600*1024))
	d.emit("put-too-large", map[string]any{"error": errText(err)})
	resp, err := d.cli.Get(c, prefix, clientv3.WithPrefix())
	d.check("list large", err)
	size := 0
	for _, kv := range resp.Kvs {
		size += len(kv.Value)
	}
	d.emit("list-large", map[string]any{"count": resp.Count, "kvs": len(resp.Kvs), "bytes": size,
		"rev": resp.Header.Revision})
	first := resp.Kvs[0].ModRevision
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	ch := d.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(first))
	var evs []*clientv3.Event
	for len(evs) < 12 {
		wresp := d.recv("watch large", ch)
		if wresp.Err() != nil {
			d.fatal("watch large", wresp.Err())
		}
		evs = append(evs, wresp.Events...)
	}
	size = 0
	for _, ev := range evs {
		size += len(ev.Kv.Value)
	}
	d.emit("watch-large", map[string]any{"events": len(evs), "bytes": size,
		"last": evs[len(evs)-1].Kv.ModRevision})
	// The same history with WithFragment: the server splits the ~10 MiB catch-up over
	// several messages (each under --max-request-bytes + 512 KiB) and the client joins them.
	fctx, fcancel := context.WithCancel(context.Background())
	defer fcancel()
	fch := d.cli.Watch(fctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(first),
		clientv3.WithFragment())
	evs, size, responses := nil, 0, 0
	for len(evs) < 12 {
		wresp := d.recv("watch large fragment", fch)
		if wresp.Err() != nil {
			d.fatal("watch large fragment", wresp.Err())
		}
		responses++
		evs = append(evs, wresp.Events...)
	}
	for _, ev := range evs {
		size += len(ev.Kv.Value)
	}
	d.emit("watch-large-fragment", map[string]any{"events": len(evs), "bytes": size,
		"responses": responses, "last": evs[len(evs)-1].Kv.ModRevision})
}

// watchMultiplex is the apiserver's many watches on one client: clientv3
// multiplexes watches whose contexts carry the same metadata onto one gRPC
// stream; cancelling one (its context) leaves the others running, and a
// progress request reaches every watcher of the stream.
func (d *driver) watchMultiplex() {
	c, cancel := ctx()
	defer cancel()
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer wcancel()
	bctx, bcancel := context.WithCancel(wctx)
	defer bcancel()
	wa := d.cli.Watch(wctx, "/mux/a/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	wb := d.cli.Watch(bctx, "/mux/b/", clientv3.WithPrefix(), clientv3.WithPrevKV(),
		clientv3.WithCreatedNotify())
	wc := d.cli.Watch(wctx, "/mux/c", clientv3.WithCreatedNotify())
	for name, ch := range map[string]clientv3.WatchChan{"a": wa, "b": wb, "c": wc} {
		resp := d.recv("created "+name, ch)
		if !resp.Created {
			d.fatal("created "+name, fmt.Errorf("first response not created: %+v", resp))
		}
	}
	for _, key := range []string{"/mux/a/1", "/mux/b/1", "/mux/c", "/mux/a/2", "/mux/b/1"} {
		_, err := d.cli.Put(c, key, "v")
		d.check("put "+key, err)
	}
	got := map[string][]*clientv3.Event{}
	for name, want := range map[string]int{"a": 2, "b": 2, "c": 1} {
		ch := map[string]clientv3.WatchChan{"a": wa, "b": wb, "c": wc}[name]
		for len(got[name]) < want {
			got[name] = append(got[name], d.recv("mux events "+name, ch).Events...)
		}
	}
	for _, name := range []string{"a", "b", "c"} {
		d.emit("mux-events", map[string]any{"watch": name, "events": d.events(got[name])})
	}
	bcancel()
	select {
	case resp, ok := <-wb:
		d.emit("mux-cancelled", map[string]any{"closed": !ok, "events": len(resp.Events)})
	case <-time.After(stepTimeout):
		d.fatal("mux cancel", errors.New("cancelled watch channel not closed"))
	}
	for _, key := range []string{"/mux/b/2", "/mux/a/3"} {
		_, err := d.cli.Put(c, key, "v")
		d.check("put "+key, err)
	}
	resp := d.recv("mux after cancel", wa)
	d.emit("mux-events", map[string]any{"watch": "a", "events": d.events(resp.Events)})
	resp = d.progressUntil(wctx, wa)
	d.emit("mux-progress", map[string]any{"watch": "a", "progress": resp.IsProgressNotify(),
		"rev": resp.Header.Revision})
	// Every request reached watch c as well; its last answer is the same revision.
	for {
		got := d.recv("mux progress c", wc)
		if !got.IsProgressNotify() || got.Header.Revision >= resp.Header.Revision {
			d.emit("mux-progress", map[string]any{"watch": "c", "progress": got.IsProgressNotify(),
				"rev": got.Header.Revision})
			break
		}
	}
}

// namespaced is the client/v3/namespace wrapper (a tenant prefix added to
// every key, range and watch, stripped from every answer).
func (d *driver) namespaced() {
	c, cancel := ctx()
	defer cancel()
	kv := namespace.NewKV(d.cli.KV, "/tenant-a/")
	w := namespace.NewWatcher(d.cli.Watcher, "/tenant-a/")
	defer w.Close()
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	ch := w.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	d.recv("namespace created", ch)
	for _, key := range []string{"x", "y", "z"} {
		_, err := kv.Put(c, key, "in-tenant")
		d.check("ns put", err)
	}
	_, err := d.cli.Put(c, "/tenant-b/x", "other tenant")
	d.check("put other tenant", err)
	all, err := kv.Get(c, "", clientv3.WithFromKey())
	d.check("ns get all", err)
	d.emit("ns-get", map[string]any{"kvs": d.kvs(all.Kvs), "count": all.Count})
	txn, err := kv.Txn(c).If(clientv3.Compare(clientv3.Version("y"), "=", 1)).
		Then(clientv3.OpDelete("x", clientv3.WithRange("z"), clientv3.WithPrevKV())).Commit()
	d.check("ns txn", err)
	d.emit("ns-txn", map[string]any{"txn": d.txn(txn)})
	var evs []*clientv3.Event
	for len(evs) < 5 {
		evs = append(evs, d.recv("ns watch", ch).Events...)
	}
	d.emit("ns-watch", map[string]any{"events": d.events(evs)})
	raw, err := d.cli.Get(c, "/tenant-", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	d.check("raw get", err)
	d.emit("ns-raw", map[string]any{"kvs": d.kvs(raw.Kvs)})
}

// keepaliveProbe holds an idle watch open for a while with client keepalive
// pings on, as the apiserver's client does (DialKeepAliveTime 30s, timeout
// 10s; grpc-go raises anything below 10s to 10s). A server that enforces a
// longer minimum ping interval answers with GOAWAY "too_many_pings" and the
// connection drops; the transcript records every connectivity change.
func keepaliveProbe(endpoints []string, hold time.Duration) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 10 * time.Second,
	})
	d := &driver{endpoints: endpoints, leases: map[clientv3.LeaseID]string{}}
	d.check("connect", err)
	defer cli.Close()
	d.cli = cli
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	defer wcancel()
	ch := cli.Watch(wctx, "/probe/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	d.recv("probe created", ch)
	conn := cli.ActiveConnection()
	state := conn.GetState()
	d.emit("keepalive-start", map[string]any{"state": state.String()})
	changes := []string{}
	hctx, hcancel := context.WithTimeout(context.Background(), hold)
	defer hcancel()
	for conn.WaitForStateChange(hctx, state) {
		state = conn.GetState()
		changes = append(changes, state.String())
	}
	d.emit("keepalive-held", map[string]any{"changes": changes})
	c, cancel := ctx()
	defer cancel()
	_, err = cli.Put(c, "/probe/after", "v")
	d.check("put after hold", err)
	resp := d.recv("probe event", ch)
	d.emit("keepalive-event", map[string]any{"events": len(resp.Events)})
}

func main() {
	endpoint := flag.String("endpoint", "", "host:port of the client URL (comma-separated: "+
		"the members of a cluster, in a fixed order)")
	probe := flag.Duration("keepalive-probe", 0, "instead of the scenario: hold an idle "+
		"watch this long with keepalive pings on and report connectivity changes")
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "usage: k8sclient -endpoint host:port[,host:port...]")
		os.Exit(2)
	}
	endpoints := strings.Split(*endpoint, ",")
	if *probe > 0 {
		keepaliveProbe(endpoints, *probe)
		return
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	d := &driver{endpoints: endpoints, multi: len(endpoints) > 1,
		leases: map[clientv3.LeaseID]string{}}
	d.check("connect", err)
	defer cli.Close()
	d.cli = cli
	sections := []struct {
		name string
		run  func()
	}{
		{"crud", d.crud}, {"list", d.list}, {"leases", d.leasesForEvents},
		{"watch-cache", d.watchCache}, {"compaction", d.compaction}, {"health", d.health},
		{"mutex", d.mutex}, {"election", d.election}, {"stm", d.stm},
		{"large-objects", d.largeObjects}, {"watch-multiplex", d.watchMultiplex},
		{"namespace", d.namespaced},
	}
	for _, s := range sections {
		d.emit("section", map[string]any{"name": s.name})
		s.run()
	}
	d.emit("done", map[string]any{})
}
