// etcdctl of the pinned etcd version (the e2e tests drive the servers through it).
package main

import (
	"os"

	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
)

func main() {
	os.Unsetenv("ETCDCTL_API")
	ctlv3.MustStart()
}
