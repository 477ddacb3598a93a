// Package k8sintegration only pins Kubernetes' integration test packages
// (k8s.io/kubernetes/test/integration/...) in this module's go.mod and go.sum;
// tests/compat/thirdparty/test_k8s_integration.py builds and runs them.
//
// go.sum also holds the sums of what those packages' tests import, which `go mod tidy`
// drops (tests of dependencies): after changing versions, add them again with
// `GOFLAGS=-mod=mod go list -test -deps k8s.io/kubernetes/test/integration/<package>`
// for each package the harness runs.
package k8sintegration

import (
	_ "k8s.io/kubernetes/test/integration/etcd"
	_ "k8s.io/kubernetes/test/integration/framework"
)
