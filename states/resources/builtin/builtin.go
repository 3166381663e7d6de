// Package builtin is the registry of the resource types brine ships. The minion, the master's
// validation and `brine local` pass Types() to the state engine explicitly; a new resource type
// is one package under states/resources and one line here.
package builtin

import (
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/apt"
	"github.com/brinecm/brine/states/resources/exec"
	"github.com/brinecm/brine/states/resources/file"
	"github.com/brinecm/brine/states/resources/iptables"
	"github.com/brinecm/brine/states/resources/service"
	"github.com/brinecm/brine/states/resources/tinc"
	"github.com/brinecm/brine/states/resources/ufw"
)

var types = states.NewRegistry(
	apt.Type, // package
	exec.Type,
	file.Type,
	iptables.ChainType,
	iptables.RuleType,
	service.Type,
	tinc.Type, // tinc_network
	ufw.Type,
)

// Types returns the registry of every resource type brine ships.
func Types() *states.Registry { return types }
