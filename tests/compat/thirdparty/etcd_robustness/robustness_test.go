// Runs etcd's robustness framework (go.etcd.io/etcd/tests/v3/robustness, pinned in go.mod) on
// the failpoints that need no gofail build: kill -9 of a member, peer network blackhole (also
// until the member needs a snapshot), peer network delay and drop, member replace. The
// framework's own TestRobustnessExploratory can't be used for that: its clusters require
// gofail (GOFAIL_HTTP) and are skipped without it, and it picks one failpoint at random.
//
// Each subtest TestRobustness/<traffic>/<cluster>/<failpoint> starts a cluster from
// <bin-dir>/etcd, records the clients' history under traffic while the failpoint is
// injected, and checks it with the framework's validation: linearizability (porcupine),
// then the watch guarantees and the serializable reads against a replay of the requests
// persisted in the members' WALs.
//
// The WALs: the framework reads etcd's WAL format. With -petcd-waldump=CMD (petcd's WAL is
// its own format), "CMD <data dir>" (waldump.py) must print the member's WAL entries as JSON lines (see
// walEntry); they are written to an etcd-format WAL in a scratch dir, and the framework's
// own reader takes the requests from there.
package etcdrobustness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sync/errgroup"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/storage/datadir"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/tests/v3/framework"
	"go.etcd.io/etcd/tests/v3/framework/e2e"
	"go.etcd.io/etcd/tests/v3/robustness/client"
	"go.etcd.io/etcd/tests/v3/robustness/failpoint"
	"go.etcd.io/etcd/tests/v3/robustness/identity"
	"go.etcd.io/etcd/tests/v3/robustness/model"
	"go.etcd.io/etcd/tests/v3/robustness/report"
	"go.etcd.io/etcd/tests/v3/robustness/traffic"
	"go.etcd.io/etcd/tests/v3/robustness/validate"
	"go.etcd.io/raft/v3/raftpb"
)

var walDump = flag.String("petcd-waldump", "",
	"command (split at spaces) printing a petcd member's WAL entries as JSON lines, given its data dir")

func TestMain(m *testing.M) { framework.E2eTestRunner.TestMain(m) }

type trafficCase struct {
	name    string
	traffic traffic.Traffic
	profile traffic.Profile
	watch   client.WatchConfig
}

var trafficCases = []trafficCase{
	{"EtcdHighTraffic", traffic.EtcdPut, traffic.HighTrafficProfile, client.WatchConfig{}},
	{"EtcdTrafficDeleteLeases", traffic.EtcdPutDeleteLease, traffic.LowTraffic, client.WatchConfig{RequestProgress: true}},
	{"KubernetesHighTraffic", traffic.Kubernetes, traffic.HighTrafficProfile, client.WatchConfig{}},
}

type clusterCase struct {
	name       string
	options    func() []e2e.EPClusterOption
	failpoints []failpoint.Failpoint
}

func baseOptions() []e2e.EPClusterOption {
	opts := []e2e.EPClusterOption{
		e2e.WithSnapshotCount(100),
		e2e.WithExperimentalWatchProcessNotifyInterval(100 * time.Millisecond),
	}
	if e2e.CouldSetSnapshotCatchupEntries(e2e.BinPath.Etcd) {
		opts = append(opts, e2e.WithSnapshotCatchUpEntries(100))
	}
	return opts
}

var clusterCases = []clusterCase{
	{
		name:       "ClusterOfSize1",
		options:    func() []e2e.EPClusterOption { return append(baseOptions(), e2e.WithClusterSize(1)) },
		failpoints: []failpoint.Failpoint{failpoint.KillFailpoint},
	},
	{
		name: "ClusterOfSize3",
		options: func() []e2e.EPClusterOption {
			return append(baseOptions(), e2e.WithClusterSize(3), e2e.WithIsPeerTLS(true), e2e.WithPeerProxy(true))
		},
		failpoints: []failpoint.Failpoint{
			failpoint.KillFailpoint,
			failpoint.BlackholePeerNetwork,
			failpoint.BlackholeUntilSnapshot,
			failpoint.DelayPeerNetwork,
			failpoint.DropPeerNetwork,
			failpoint.MemberReplace,
		},
	},
}

func failpointName(f failpoint.Failpoint) string {
	if f == failpoint.BlackholeUntilSnapshot {
		return "blackholeUntilSnapshot" // Name() is "blackholePeerNetwork" for both
	}
	return f.Name()
}

func TestRobustness(t *testing.T) {
	framework.E2eTestRunner.BeforeTest(t)
	for _, tc := range trafficCases {
		for _, cc := range clusterCases {
			for _, fp := range cc.failpoints {
				t.Run(filepath.Join(tc.name, cc.name, failpointName(fp)), func(t *testing.T) {
					runCase(t, tc, cc, fp)
				})
			}
		}
	}
}

func runCase(t *testing.T, tc trafficCase, cc clusterCase, fp failpoint.Failpoint) {
	lg := zaptest.NewLogger(t)
	cfg := e2e.NewConfig(cc.options()...)
	cfg.Logger = lg
	ctx := context.Background()
	clus, err := e2e.NewEtcdProcessCluster(ctx, t, e2e.WithConfig(cfg))
	require.NoError(t, err)
	defer func() {
		for _, m := range clus.Procs {
			m.Kill()
		}
		clus.ConcurrentStop()
	}()
	// For a binary older than 3.6 (petcd says it is etcd 3.5.17) the framework passes the
	// catch-up entries as --experimental-snapshot-catchup-entries and resets the value in its
	// config to the default, from which it then computes how far a blackholed member must
	// fall behind to need a snapshot (5100 entries instead of 200: blackholeUntilSnapshot is
	// then never available). Put back the value the members run with.
	if sc := &clus.Cfg.ServerConfig; !e2e.IsSnapshotCatchupEntriesFlagAvailable(e2e.BinPath.Etcd) &&
		sc.ExperimentalSnapshotCatchUpEntries != etcdserver.DefaultSnapshotCatchUpEntries {
		sc.SnapshotCatchUpEntries = sc.ExperimentalSnapshotCatchUpEntries
	}
	if err := failpoint.Validate(clus, fp, tc.profile); err != nil {
		t.Skipf("not available here: %v", err)
	}
	r := report.TestReport{Logger: lg, Cluster: clus}
	saved := false
	defer func() { r.Report(t, !saved) }()
	r.Client = record(ctx, t, lg, clus, tc, fp)
	persisted, err := persistedRequests(t, lg, clus)
	require.NoError(t, err)
	vcfg := validate.Config{ExpectRevisionUnique: tc.traffic.ExpectUniqueRevision()}
	r.Visualize = validate.ValidateAndReturnVisualize(t, lg, vcfg, r.Client, persisted, 5*time.Minute)
	saved = true
}

// record runs the traffic, the failpoint and the watchers together and returns every
// client's report: traffic clients, the failpoint's own clients, one watcher per member.
func record(ctx context.Context, t *testing.T, lg *zap.Logger, clus *e2e.EtcdProcessCluster, tc trafficCase, fp failpoint.Failpoint) []report.ClientReport {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	ids := identity.NewIDProvider()
	injected := make(chan report.FailpointInjection, 1)
	maxRevision := make(chan int64, 1)
	var ops, watches, fpClients []report.ClientReport
	var g errgroup.Group
	g.Go(func() error {
		defer close(injected)
		// Let the traffic reach its rate first, and again after the fault.
		time.Sleep(time.Second + time.Duration(rand.Int63n(int64(400*time.Millisecond))))
		fr, err := failpoint.Inject(ctx, t, lg, clus, fp, start, ids)
		if err != nil {
			t.Error(err)
			cancel()
			return nil
		}
		time.Sleep(time.Second)
		injected <- fr.FailpointInjection
		fpClients = fr.Client
		return nil
	})
	g.Go(func() error {
		defer close(maxRevision)
		ops = traffic.SimulateTraffic(ctx, t, lg, clus, tc.profile, tc.traffic, injected, start, ids)
		var highest int64
		for _, r := range ops {
			for _, op := range r.KeyValue {
				highest = max(highest, op.Output.(model.MaybeEtcdResponse).Revision)
			}
		}
		maxRevision <- highest
		return nil
	})
	g.Go(func() error {
		watches = client.CollectClusterWatchEvents(ctx, t, clus, maxRevision, tc.watch, start, ids)
		return nil
	})
	g.Wait()
	return append(append(ops, fpClients...), watches...)
}

func persistedRequests(t *testing.T, lg *zap.Logger, clus *e2e.EtcdProcessCluster) ([]model.EtcdRequest, error) {
	dirs := make([]string, 0, len(clus.Procs))
	for _, m := range clus.Procs {
		dirs = append(dirs, m.Config().DataDirPath)
	}
	if *walDump == "" {
		return report.PersistedRequestsDirs(lg, dirs)
	}
	converted := make([]string, 0, len(dirs))
	for i, dir := range dirs {
		out := filepath.Join(t.TempDir(), fmt.Sprintf("member-%d", i))
		if err := convertWAL(dir, out); err != nil {
			// Like an unreadable etcd WAL: the framework tolerates it in a minority of members.
			lg.Info("petcd WAL not converted", zap.String("data-dir", dir), zap.Error(err))
		}
		converted = append(converted, out)
	}
	return report.PersistedRequestsDirs(lg, converted)
}

// walEntry is one line of the dump: a raft entry of the member's log, in log order.
// A normal entry with a client request has exactly one of the request fields, each the
// protobuf encoding of etcd's message of that name.
type walEntry struct {
	Index, Term uint64
	Kind        string // "normal" or "conf"
	Put         []byte `json:",omitempty"`
	DeleteRange []byte `json:",omitempty"`
	Txn         []byte `json:",omitempty"`
	Compaction  []byte `json:",omitempty"`
	LeaseGrant  []byte `json:",omitempty"`
	LeaseRevoke []byte `json:",omitempty"`
	Other       bool   // a request the framework does not model (member attributes ...)
}

func convertWAL(petcdDir, out string) error {
	var stdout, stderr bytes.Buffer
	argv := append(strings.Fields(*walDump), petcdDir)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", *walDump, err, stderr.String())
	}
	var ents []raftpb.Entry
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e walEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return err
		}
		ent := raftpb.Entry{Index: e.Index, Term: e.Term, Type: raftpb.EntryNormal}
		if e.Kind == "conf" {
			ent.Type = raftpb.EntryConfChange
		}
		var req pb.InternalRaftRequest
		var err error
		switch {
		case e.Put != nil:
			req.Put = &pb.PutRequest{}
			err = req.Put.Unmarshal(e.Put)
		case e.DeleteRange != nil:
			req.DeleteRange = &pb.DeleteRangeRequest{}
			err = req.DeleteRange.Unmarshal(e.DeleteRange)
		case e.Txn != nil:
			req.Txn = &pb.TxnRequest{}
			err = req.Txn.Unmarshal(e.Txn)
		case e.Compaction != nil:
			req.Compaction = &pb.CompactionRequest{}
			err = req.Compaction.Unmarshal(e.Compaction)
		case e.LeaseGrant != nil:
			req.LeaseGrant = &pb.LeaseGrantRequest{}
			err = req.LeaseGrant.Unmarshal(e.LeaseGrant)
		case e.LeaseRevoke != nil:
			req.LeaseRevoke = &pb.LeaseRevokeRequest{}
			err = req.LeaseRevoke.Unmarshal(e.LeaseRevoke)
		case e.Other:
			req.ClusterMemberAttrSet = &membershippb.ClusterMemberAttrSetRequest{} // skipped by the framework's parser
		}
		if err != nil {
			return fmt.Errorf("entry %d: %w", e.Index, err)
		}
		if ent.Type == raftpb.EntryNormal && (e.Put != nil || e.DeleteRange != nil || e.Txn != nil ||
			e.Compaction != nil || e.LeaseGrant != nil || e.LeaseRevoke != nil || e.Other) {
			if ent.Data, err = req.Marshal(); err != nil {
				return err
			}
		}
		ents = append(ents, ent)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	w, err := wal.Create(zap.NewNop(), datadir.ToWALDir(out), nil)
	if err != nil {
		return err
	}
	defer w.Close()
	var hs raftpb.HardState
	if n := len(ents); n > 0 {
		hs = raftpb.HardState{Term: ents[n-1].Term, Commit: ents[n-1].Index}
	}
	return w.Save(hs, ents)
}
