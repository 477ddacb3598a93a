// Package vitesstopo only pins Vitess's etcd topology server tests
// (vitess.io/vitess/go/vt/topo/etcd2topo) and the vtctldclient they run in this module's
// go.mod and go.sum; tests/compat/thirdparty/test_vitess_topo.py builds and runs them.
//
// go.sum also holds the sums of what those packages' tests import, which `go mod tidy`
// drops (tests of dependencies): after changing the version, add them again with
// `GOFLAGS=-mod=mod go list -test -deps vitess.io/vitess/go/vt/topo/etcd2topo`.
package vitesstopo

import (
	_ "vitess.io/vitess/go/vt/topo/etcd2topo"
)
