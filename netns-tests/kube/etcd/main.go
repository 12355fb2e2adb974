// Command etcd is the etcd server (go.etcd.io/etcd/server/v3, the release
// pinned in go.mod) behind the netns tests' kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
