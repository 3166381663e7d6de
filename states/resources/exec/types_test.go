package exec

import "github.com/brinecm/brine/states"

// testTypes is what the tests of this package compile bundles against.
var testTypes = states.NewRegistry(Type)
