// The real etcd server of the pinned etcd version, built from the Go module proxy: the
// reference the robustness tests are checked against when petcd fails one.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
