// Command kube is the real Kubernetes control plane the netns tests run
// against, built from the upstream modules at the release pinned in go.mod:
// one multi-call binary (shared dependencies are compiled once) that runs
// kube-apiserver, kube-controller-manager, kube-proxy or kubectl, chosen by
// its first argument or by the name it is invoked as.
//
// Built by netns-tests/deps.sh into a cache outside the repository, keyed by
// version; see netns-tests/kube/README.md.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
)

const usage = "usage: kube kube-apiserver|kube-controller-manager|kube-proxy|kubectl [flags]"

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "kube" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	os.Args = append([]string{name}, args...)
	switch name {
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-proxy":
		os.Exit(cli.Run(proxy.NewProxyCommand()))
	case "kubectl":
		os.Exit(cli.Run(kubectlcmd.NewDefaultKubectlCommand()))
	default:
		fmt.Fprintf(os.Stderr, "kube: unknown command %q\n%s\n", name, usage)
		os.Exit(2)
	}
}
