package service

import (
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/exec"
)

// testTypes is what the tests of this package compile bundles against.
var testTypes = states.NewRegistry(Type, exec.Type)
